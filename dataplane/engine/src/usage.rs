//! Who uses a tunnel or a port: so that removing one still in use is
//! refused with the names of its users, not with the first dangling
//! reference the whole-document check happens to find.

use crate::model::{Action, Config};

/// The users of tunnel `name` in `c`, in words ("rule 10", "fdb entry vni
/// 42 mac 02:00:00:00:00:02", "flood list of vni 42").
pub fn tunnel_users(c: &Config, name: &str) -> Vec<String> {
    let mut users: Vec<String> = c
        .rules
        .iter()
        .filter(|r| {
            r.matches.tunnel.as_deref() == Some(name)
                || r.actions.iter().any(|a| matches!(a, Action::Encap(t) if t == name))
        })
        .map(|r| format!("rule {}", r.id))
        .collect();
    users.extend(
        c.fdb
            .iter()
            .filter(|e| e.tunnel == name)
            .map(|e| format!("fdb entry vni {} mac {}", e.vni, e.mac)),
    );
    users.extend(
        c.flood
            .iter()
            .filter(|f| f.tunnels.iter().any(|t| t == name))
            .map(|f| format!("flood list of vni {}", f.vni)),
    );
    users
}

/// The users of port `name` in `c`, in words.
pub fn port_users(c: &Config, name: &str) -> Vec<String> {
    let mut users: Vec<String> = c
        .rules
        .iter()
        .filter(|r| {
            r.matches.in_port.as_deref() == Some(name)
                || r.actions.iter().any(|a| matches!(a, Action::Output(p) if p == name))
        })
        .map(|r| format!("rule {}", r.id))
        .collect();
    users.extend(
        c.tunnels.iter().filter(|t| t.uplink == name).map(|t| format!("tunnel {:?}", t.name)),
    );
    users.extend(
        c.flood
            .iter()
            .filter(|f| f.ports.iter().any(|p| p == name))
            .map(|f| format!("flood list of vni {}", f.vni)),
    );
    users
}

/// "X is used by a, b and c: remove or change them first".
pub fn in_use(what: &str, users: &[String]) -> String {
    let list = match users {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    format!(
        "{what} is in use by {list}: remove or change them first (in the same batch if you like)"
    )
}
