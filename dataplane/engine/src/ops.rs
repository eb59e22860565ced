//! Changes to a configuration as a batch of operations: applied in order to a
//! copy, then validated as a whole; all or nothing. An operation that cannot
//! apply (removing what is not there, adding what already is) names itself:
//! `ops[2].remove_rule: no rule with id 12`.

use serde::{Deserialize, Serialize};

use crate::model::{
    Config, ConfigError, FdbEntry, FloodList, Mac, PhysFn, Port, Rule, Tunnel, VfSettings,
};

/// One change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    AddRule(Rule),
    /// Replaces the rule with the same id.
    ReplaceRule(Rule),
    RemoveRule(u32),
    AddTunnel(Tunnel),
    ReplaceTunnel(Tunnel),
    RemoveTunnel(String),
    AddPort(Port),
    RemovePort(String),
    AddFdb(FdbEntry),
    RemoveFdb {
        vni: u32,
        mac: Mac,
    },
    /// Sets (adds or replaces) the flood list of a VNI.
    SetFlood(FloodList),
    RemoveFlood(u32),
    /// Sets the given fields of one VF of a physical function (the others
    /// keep their configured values); adds the PF to `offload.pfs` if needed.
    SetVf {
        pf: String,
        #[serde(flatten)]
        settings: VfSettings,
    },
    /// Sets the number of VFs of a physical function.
    SetNumVfs {
        pf: String,
        num_vfs: u32,
    },
    /// Turns flow offload on or off.
    SetOffload {
        enabled: bool,
    },
}

/// A batch, based on a generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub generation: u64,
    pub ops: Vec<Op>,
}

fn op_err(i: usize, op: &str, reason: String) -> ConfigError {
    ConfigError::Invalid { path: format!("ops[{i}].{op}"), reason }
}

/// Applies `ops` to a copy of `config` and validates the result.
pub fn apply(config: &Config, ops: &[Op]) -> Result<Config, ConfigError> {
    let mut c = config.clone();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::AddRule(r) => {
                if c.rules.iter().any(|x| x.id == r.id) {
                    return Err(op_err(
                        i,
                        "add_rule",
                        format!("rule id {} exists (use replace_rule)", r.id),
                    ));
                }
                c.rules.push(r.clone());
            }
            Op::ReplaceRule(r) => match c.rules.iter_mut().find(|x| x.id == r.id) {
                Some(x) => *x = r.clone(),
                None => return Err(op_err(i, "replace_rule", format!("no rule with id {}", r.id))),
            },
            Op::RemoveRule(id) => {
                let n = c.rules.len();
                c.rules.retain(|x| x.id != *id);
                if c.rules.len() == n {
                    return Err(op_err(i, "remove_rule", format!("no rule with id {id}")));
                }
            }
            Op::AddTunnel(t) => {
                if c.tunnels.iter().any(|x| x.name == t.name) {
                    return Err(op_err(
                        i,
                        "add_tunnel",
                        format!("tunnel {:?} exists (use replace_tunnel)", t.name),
                    ));
                }
                c.tunnels.push(t.clone());
            }
            Op::ReplaceTunnel(t) => match c.tunnels.iter_mut().find(|x| x.name == t.name) {
                Some(x) => *x = t.clone(),
                None => return Err(op_err(i, "replace_tunnel", format!("no tunnel {:?}", t.name))),
            },
            Op::RemoveTunnel(name) => {
                let n = c.tunnels.len();
                c.tunnels.retain(|x| &x.name != name);
                if c.tunnels.len() == n {
                    return Err(op_err(i, "remove_tunnel", format!("no tunnel {name:?}")));
                }
            }
            Op::AddPort(p) => {
                if c.ports.iter().any(|x| x.name == p.name) {
                    return Err(op_err(i, "add_port", format!("port {:?} exists", p.name)));
                }
                c.ports.push(p.clone());
            }
            Op::RemovePort(name) => {
                let n = c.ports.len();
                c.ports.retain(|x| &x.name != name);
                if c.ports.len() == n {
                    return Err(op_err(i, "remove_port", format!("no port {name:?}")));
                }
            }
            Op::AddFdb(e) => {
                if c.fdb.iter().any(|x| x.vni == e.vni && x.mac == e.mac) {
                    return Err(op_err(
                        i,
                        "add_fdb",
                        format!("an entry for vni {} mac {} exists", e.vni, e.mac),
                    ));
                }
                c.fdb.push(e.clone());
            }
            Op::RemoveFdb { vni, mac } => {
                let n = c.fdb.len();
                c.fdb.retain(|x| !(x.vni == *vni && x.mac == *mac));
                if c.fdb.len() == n {
                    return Err(op_err(
                        i,
                        "remove_fdb",
                        format!("no entry for vni {vni} mac {mac}"),
                    ));
                }
            }
            Op::SetFlood(f) => {
                c.flood.retain(|x| x.vni != f.vni);
                c.flood.push(f.clone());
            }
            Op::RemoveFlood(vni) => {
                let n = c.flood.len();
                c.flood.retain(|x| x.vni != *vni);
                if c.flood.len() == n {
                    return Err(op_err(i, "remove_flood", format!("no flood list for vni {vni}")));
                }
            }
            Op::SetVf { pf, settings } => {
                let p = pf_entry(&mut c, pf);
                match p.vfs.iter_mut().find(|v| v.vf == settings.vf) {
                    Some(v) => v.merge(settings),
                    None => p.vfs.push(settings.clone()),
                }
            }
            Op::SetNumVfs { pf, num_vfs } => pf_entry(&mut c, pf).num_vfs = Some(*num_vfs),
            Op::SetOffload { enabled } => c.offload.enabled = *enabled,
        }
    }
    still_used(&c, ops)?;
    // References between objects (a rule naming a removed tunnel, say) are
    // checked on the result as a whole.
    c.validate()?;
    Ok(c)
}

/// Refuses a batch that removes a tunnel or port its result still uses,
/// naming the users.
fn still_used(c: &Config, ops: &[Op]) -> Result<(), ConfigError> {
    use crate::usage::{in_use, port_users, tunnel_users};
    for (i, op) in ops.iter().enumerate() {
        let (op, what, users) = match op {
            Op::RemoveTunnel(n) if !c.tunnels.iter().any(|t| &t.name == n) => {
                ("remove_tunnel", format!("tunnel {n:?}"), tunnel_users(c, n))
            }
            Op::RemovePort(n) if !c.ports.iter().any(|p| &p.name == n) => {
                ("remove_port", format!("port {n:?}"), port_users(c, n))
            }
            _ => continue,
        };
        if !users.is_empty() {
            return Err(op_err(i, op, in_use(&what, &users)));
        }
    }
    Ok(())
}

fn pf_entry<'a>(c: &'a mut Config, pf: &str) -> &'a mut PhysFn {
    let pfs = &mut c.offload.pfs;
    match pfs.iter().position(|p| p.interface == pf) {
        Some(i) => &mut pfs[i],
        None => {
            pfs.push(PhysFn { interface: pf.to_string(), num_vfs: None, vfs: Vec::new() });
            pfs.last_mut().expect("just pushed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config::from_toml(crate::model::EXAMPLE_FOR_TESTS).unwrap()
    }

    fn rule(id: u32) -> Rule {
        serde_json::from_value(serde_json::json!({ "id": id, "actions": ["drop"] })).unwrap()
    }

    #[test]
    fn ops_apply_in_order_and_all_or_nothing() {
        let c =
            apply(&base(), &[Op::AddRule(rule(50)), Op::RemoveRule(2), Op::ReplaceRule(rule(50))])
                .unwrap();
        assert_eq!(c.rules.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 50]);

        let e = apply(&base(), &[Op::AddRule(rule(50)), Op::RemoveRule(99)]).unwrap_err();
        assert_eq!(e.path(), Some("ops[1].remove_rule"));
        let e = apply(&base(), &[Op::AddRule(rule(1))]).unwrap_err();
        assert!(e.to_string().contains("rule id 1 exists"), "{e}");
        // Removing a tunnel still in use is refused, naming its users...
        let e = apply(&base(), &[Op::RemoveTunnel("t1".into())]).unwrap_err();
        assert_eq!(e.path(), Some("ops[0].remove_tunnel"));
        assert!(
            e.to_string().contains(
                "tunnel \"t1\" is in use by rule 1, rule 2, fdb entry vni 42 mac 02:00:00:00:00:02 and flood list of vni 42"
            ),
            "{e}"
        );
        // ... and allowed when the same batch removes its users too.
        let all = [
            Op::RemoveTunnel("t1".into()),
            Op::RemoveRule(1),
            Op::RemoveRule(2),
            Op::RemoveFdb { vni: 42, mac: "02:00:00:00:00:02".parse().unwrap() },
            Op::RemoveFlood(42),
        ];
        assert!(apply(&base(), &all).is_ok());
        let e = apply(&base(), &[Op::RemovePort("up0".into())]).unwrap_err();
        assert!(e.to_string().contains("port \"up0\" is in use by tunnel \"t1\""), "{e}");
        let ok = apply(
            &base(),
            &[
                Op::RemoveFlood(42),
                Op::RemoveFdb { vni: 42, mac: "02:00:00:00:00:02".parse().unwrap() },
            ],
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn vf_settings_merge_field_by_field() {
        let b: Batch = serde_json::from_str(
            r#"{"generation": 3, "ops": [
                {"set_vf": {"pf": "pf0", "vf": 1, "mac": "02:00:00:00:00:09", "vlan": 10}},
                {"set_vf": {"pf": "pf0", "vf": 1, "trust": true}},
                {"set_num_vfs": {"pf": "pf0", "num_vfs": 4}}]}"#,
        )
        .unwrap();
        let c = apply(&base(), &b.ops).unwrap();
        let pf = &c.offload.pfs[0];
        assert_eq!((pf.interface.as_str(), pf.num_vfs), ("pf0", Some(4)));
        assert_eq!(pf.vfs.len(), 1);
        let v = &pf.vfs[0];
        assert_eq!(
            (v.vlan, v.trust, v.mac.map(|m| m.to_string())),
            (Some(10), Some(true), Some("02:00:00:00:00:09".into()))
        );
        // A VF beyond num_vfs is refused by the whole-document check, with its path.
        let e = apply(&c, &[Op::SetNumVfs { pf: "pf0".into(), num_vfs: 1 }]).unwrap_err();
        assert_eq!(e.path(), Some("offload.pfs[0].vfs[0].vf"), "{e}");
        // A misspelt VF field is refused, not ignored.
        let typo = serde_json::from_str::<Batch>(
            r#"{"generation": 1, "ops": [{"set_vf": {"pf": "p", "vf": 1, "macc": "02:00:00:00:00:01"}}]}"#,
        );
        assert!(typo.unwrap_err().to_string().contains("unknown field `macc`"));
    }

    #[test]
    fn batches_parse_from_json() {
        let b: Batch = serde_json::from_str(
            r#"{"generation": 3, "ops": [{"remove_rule": 7}, {"add_rule": {"id": 8, "actions": ["drop"]}}, {"remove_fdb": {"vni": 1, "mac": "02:00:00:00:00:01"}}]}"#,
        )
        .unwrap();
        assert_eq!(b.ops.len(), 3);
    }
}
