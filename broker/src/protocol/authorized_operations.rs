//! The `authorized_operations` bit sets of Metadata, DescribeCluster and DescribeGroups.
//!
//! A client asks for them with `include_*_authorized_operations`; the answer sets bit `code`
//! for each ACL operation the client may perform on the resource. Faultline has no authorizer,
//! so, as Kafka without one, every operation that applies to the resource is allowed (Kafka's
//! `AclEntry.supportedOperations`). Not asked, the field keeps [`NOT_REQUESTED`] (Kafka's
//! INT32_MIN); a client that decodes it as a bit set anyway sees bit 31, which kafka-python's
//! admin client refused as "31 is not a valid ACLOperation".

/// The field's value when the client did not ask (Kafka's default in the message schemas).
pub const NOT_REQUESTED: i32 = i32::MIN;

/// Kafka's `AclOperation` codes (the bit positions); UNKNOWN, ANY and ALL never appear in a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AclOperation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
}

/// The resources whose operations these responses describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Topic,
    Group,
    Cluster,
}

impl Resource {
    /// The operations that apply to this kind of resource (Kafka 4's
    /// `AclEntry.supportedOperations`).
    pub fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            Resource::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            Resource::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            Resource::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
        }
    }

    /// The bit set of the operations this client may perform: all of them, with no authorizer.
    pub fn authorized_operations(self) -> i32 {
        let bits = self
            .supported_operations()
            .iter()
            .fold(0i32, |bits, &op| bits | 1 << op as u8);
        // Bit 31 is what NOT_REQUESTED sets; a real set never reaches it.
        assert!(bits > 0, "{self:?}: empty operation set");
        assert_ne!(bits, NOT_REQUESTED);
        bits
    }

    /// The field's value: the bit set if the client asked for it, else [`NOT_REQUESTED`].
    pub fn answer(self, requested: bool) -> i32 {
        if requested {
            self.authorized_operations()
        } else {
            NOT_REQUESTED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bit_sets_are_kafkas_for_a_broker_without_an_authorizer() {
        // Bits: READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10,
        // ALTER_CONFIGS 11.
        assert_eq!(Resource::Topic.authorized_operations(), 0b1101_1111_1000);
        // READ 3, DELETE 6, DESCRIBE 8, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11.
        assert_eq!(Resource::Group.authorized_operations(), 0b1101_0100_1000);
        // CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10,
        // ALTER_CONFIGS 11, IDEMPOTENT_WRITE 12.
        assert_eq!(
            Resource::Cluster.authorized_operations(),
            0b1_1111_1010_0000
        );
    }

    #[test]
    fn an_unrequested_set_keeps_kafkas_int32_min() {
        assert_eq!(Resource::Topic.answer(false), i32::MIN);
        assert_eq!(Resource::Topic.answer(true), 3576);
        assert_eq!(Resource::Group.answer(true), 3400);
        assert_eq!(Resource::Cluster.answer(true), 8096);
    }
}
