//! Group administration: ListGroups, DescribeGroups, DeleteGroups.

use super::*;

impl GroupCoordinator {
    /// ListGroups over this coordinator's groups (the shell merges all partitions').
    pub fn list_groups(&self, req: &ListGroupsRequest) -> ListGroupsResponse {
        let error_code = self.status_error();
        if error_code != ec::NONE {
            return ListGroupsResponse {
                error_code,
                groups: Vec::new(),
            };
        }
        let wanted = |filter: &[String], value: &str| {
            filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
        };
        // KIP-848 group types: every group here is a "classic" one.
        let type_wanted = wanted(&req.types_filter, "classic");
        let groups = self
            .groups
            .values()
            .filter(|g| type_wanted && wanted(&req.states_filter, g.state.as_str()))
            .map(|g| ListedGroup {
                group_id: g.group_id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.as_str(),
            })
            .collect();
        ListGroupsResponse {
            error_code: ec::NONE,
            groups,
        }
    }

    /// DescribeGroups for the given groups, answered at once.
    pub fn describe_groups(&self, group_ids: &[String]) -> Vec<DescribedGroup> {
        group_ids.iter().map(|id| self.describe_group(id)).collect()
    }

    fn describe_group(&self, group_id: &str) -> DescribedGroup {
        let mut d = DescribedGroup {
            error_code: ec::NONE,
            group_id: group_id.to_owned(),
            state: GroupState::Dead.as_str(),
            protocol_type: String::new(),
            protocol_data: String::new(),
            members: Vec::new(),
        };
        if let Err(code) = self.check_group(group_id, GroupIdUse::OffsetsOrAdmin) {
            d.error_code = code;
            return d;
        }
        let Some(g) = self.groups.get(group_id) else {
            return d;
        };
        let stable = g.state == GroupState::Stable;
        d.state = g.state.as_str();
        d.protocol_type = g.protocol_type.clone().unwrap_or_default();
        if stable {
            d.protocol_data = g.protocol_name.clone().unwrap_or_default();
        }
        d.members = g
            .members
            .values()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: match (&g.protocol_name, stable) {
                    (Some(p), true) => m.metadata(p),
                    _ => Bytes::new(),
                },
                assignment: if stable {
                    m.assignment.clone()
                } else {
                    Bytes::new()
                },
            })
            .collect();
        d
    }

    /// The state and generation of a group, if this coordinator holds it.
    pub fn group_state(&self, group_id: &str) -> Option<(GroupState, i32)> {
        self.groups
            .get(group_id)
            .map(|g| (g.state, g.generation_id))
    }

    /// DeleteGroups: only Empty groups are deleted (with all their offsets).
    pub fn delete_groups(
        &mut self,
        token: RequestToken,
        group_ids: Vec<String>,
        _now_ms: u64,
        out: &mut Outputs,
    ) {
        let mut results = Vec::with_capacity(group_ids.len());
        let mut deleted = Vec::new();
        let mut records = Vec::new();
        for group_id in group_ids {
            let code = match self.check_group(&group_id, GroupIdUse::OffsetsOrAdmin) {
                Err(code) => code,
                Ok(()) => match self.groups.get(&group_id).map(|g| g.state) {
                    None | Some(GroupState::Dead) => ec::GROUP_ID_NOT_FOUND,
                    Some(GroupState::Empty) => {
                        if let Some(g) = self.groups.remove(&group_id) {
                            for (member_id, deadline) in &g.pending_members {
                                self.cancel_timer(
                                    &group_id,
                                    TimerKind::PendingMember(member_id.clone()),
                                    *deadline,
                                );
                            }
                            for (topic, partition) in g.offsets.keys() {
                                records.push(offset_tombstone(&group_id, topic, *partition));
                            }
                            records.push(group_tombstone(&group_id));
                        }
                        deleted.push(results.len());
                        ec::NONE
                    }
                    Some(_) => ec::NON_EMPTY_GROUP,
                },
            };
            results.push((group_id, code));
        }
        if records.is_empty() {
            out.responses.push((
                token,
                Response::DeleteGroups(DeleteGroupsResponse { results }),
            ));
        } else {
            self.append(
                records,
                PendingAppend::DeleteGroups {
                    token,
                    results,
                    deleted,
                },
                out,
            );
        }
    }
}

/// A DeleteGroups' tombstones are stored (or failed): answers it, the deleted groups with the
/// store's error on failure.
pub(super) fn groups_deleted(
    token: RequestToken,
    mut results: Vec<(String, ErrorCode)>,
    deleted: &[usize],
    result: Result<(), ErrorCode>,
    out: &mut Outputs,
) {
    if let Err(code) = result {
        let code = ec::group_store_error(code);
        for &i in deleted {
            results[i].1 = code;
        }
    }
    out.responses.push((
        token,
        Response::DeleteGroups(DeleteGroupsResponse { results }),
    ));
}
