//! What overlayd tells systemd (sd_notify, a no-op without `NOTIFY_SOCKET`).
//! A planned upgrade moves the service to another process: the old one
//! names the new one `MAINPID` as it hands over, before it exits, and the
//! new one says `MAINPID` (itself) with `READY=1` once it serves, so the
//! old one's exit does not end the service. The unit allows messages from
//! any of its processes (`NotifyAccess=all`, packaging/overlayd.service).

use sd_notify::NotifyState;

/// The states sent once this process serves: `READY=1`, preceded by
/// `MAINPID=` when it took over from another overlayd.
pub fn ready_states(took_over: bool, pid: u32) -> Vec<NotifyState<'static>> {
    let mut v = Vec::new();
    if took_over {
        v.push(NotifyState::MainPid(pid));
    }
    v.push(NotifyState::Ready);
    v
}

/// This process serves now.
pub fn ready(took_over: bool) -> std::io::Result<()> {
    sd_notify::notify(&ready_states(took_over, std::process::id()))
}

/// `successor` has taken over: it is the service's main process.
pub fn handed_to(successor: u32) -> std::io::Result<()> {
    sd_notify::notify(&[NotifyState::MainPid(successor)])
}

/// The datagram the states make (what systemd reads), for tests and logs.
pub fn message(states: &[NotifyState]) -> String {
    states.iter().map(|s| format!("{s}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_names_itself_main_before_it_says_ready() {
        assert_eq!(message(&ready_states(false, 7)), "READY=1\n");
        assert_eq!(message(&ready_states(true, 4242)), "MAINPID=4242\nREADY=1\n");
    }
}
