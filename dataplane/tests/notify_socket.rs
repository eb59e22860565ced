//! The sd_notify messages of a planned upgrade against a real
//! `NOTIFY_SOCKET` (a Unix datagram socket, as systemd's): the old overlayd
//! names its successor `MAINPID` as it hands over, the successor names
//! itself and says `READY=1`. One test in its own process: it sets the
//! environment variable the messages are sent to.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[test]
fn an_upgrade_moves_the_main_pid_then_says_ready() {
    let dir = std::env::temp_dir().join(format!("overlayd-notify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &path);
    let recv = || {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    dataplane::notify::ready(false).unwrap();
    assert_eq!(recv(), "READY=1\n", "a first start");
    dataplane::notify::handed_to(4242).unwrap();
    assert_eq!(recv(), "MAINPID=4242\n", "the old overlayd, handing over");
    dataplane::notify::ready(true).unwrap();
    assert_eq!(recv(), format!("MAINPID={}\nREADY=1\n", std::process::id()), "the successor");

    std::env::remove_var("NOTIFY_SOCKET");
    dataplane::notify::ready(true).expect("without systemd: nothing sent, no error");
    std::fs::remove_dir_all(&dir).unwrap();
}
