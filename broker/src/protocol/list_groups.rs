//! ListGroups: every group this broker coordinates, in id order (optionally filtered by state,
//! v4+).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;

pub fn handle(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let mut groups = Vec::new();
    ctx.broker.groups().for_each_group(|g| {
        let state = g.state.name();
        // A deleted group waiting for its tombstone is gone already, as far as clients know.
        if g.state == crate::group::machine::GroupState::Dead {
            return;
        }
        if ctx.version >= 4
            && !request.states_filter.is_empty()
            && !request
                .states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state))
        {
            return;
        }
        let mut listed = ListedGroup::default()
            .with_group_id(GroupId(StrBytes::from_string(g.id.clone())))
            // Empty for a group that only ever committed offsets, as in Kafka and DescribeGroups.
            .with_protocol_type(StrBytes::from_string(
                g.protocol_type.clone().unwrap_or_default(),
            ));
        if ctx.version >= 4 {
            listed = listed.with_group_state(StrBytes::from_static_str(state));
        }
        if ctx.version >= 5 {
            listed = listed.with_group_type(StrBytes::from_static_str("classic"));
        }
        groups.push(listed);
    });
    // As Kafka: the groups that are loaded, and the error while some are still loading.
    let error_code = if ctx.broker.groups().is_loading() {
        ResponseError::CoordinatorLoadInProgress.code()
    } else {
        0
    };
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(groups)
}
