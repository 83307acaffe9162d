//! DescribeGroups: state, protocol and members (metadata and assignment) of each group. An
//! unknown group is described as Dead, as Kafka does before v6; a group this broker does not
//! coordinate (or whose partition is loading) gets NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS).

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::authorized_operations::Resource;
use super::{errors, RequestContext};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

pub fn handle(ctx: &RequestContext, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let version = ctx.version;
    // v3+; Kafka answers it for every group described, unknown ones included.
    let operations = Resource::Group.answer(request.include_authorized_operations);
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let described = ctx.broker.groups().read_group(&id.0, |g| {
                let protocol = g.protocol_name.clone().unwrap_or_default();
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default()
                            .with_member_id(s(&m.member_id))
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_member_metadata(
                                m.protocols
                                    .iter()
                                    .find(|(n, _)| *n == protocol)
                                    .map(|(_, b)| b.clone())
                                    .unwrap_or_default(),
                            )
                            .with_member_assignment(m.assignment.clone());
                        if version >= 4 {
                            d = d.with_group_instance_id(m.group_instance_id.as_deref().map(s));
                        }
                        d
                    })
                    .collect();
                DescribedGroup::default()
                    .with_group_state(s(g.state.name()))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(s(&protocol))
                    .with_members(members)
            });
            let mut described = match described {
                Ok(Some(described)) => described,
                Ok(None) => DescribedGroup::default().with_group_state(s("Dead")),
                // Kafka's answer for a group it cannot describe here: the error, no state.
                Err(e) => DescribedGroup::default().with_error_code(errors::group(&e).code()),
            }
            .with_group_id(id);
            if version >= 3 {
                described.authorized_operations = operations;
            }
            described
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
