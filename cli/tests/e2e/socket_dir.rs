//! Where the demo may put its socket: it makes no folder but the default socket's own,
//! and every failure to listen names the path.

use pcapcast_tests::temp_dir;

use super::pcapcast;

#[test]
fn the_demo_creates_no_folder_a_socket_path_names() {
    let dir = temp_dir("socket-dir");
    let missing = dir.join("nonexistent").join("dir");
    let socket = missing.join("x.sock");
    let out = pcapcast(&["demo", "-q", "--socket", socket.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{} ", missing.display())),
        "the message names the folder: {stderr}"
    );
    assert!(
        !dir.join("nonexistent").exists(),
        "the demo created a folder"
    );
}

#[test]
fn a_socket_that_cannot_be_bound_is_named() {
    let dir = temp_dir("socket-bind");
    // Longer than a Unix socket address holds (108 bytes).
    let socket = dir.join(format!("{}.sock", "s".repeat(120)));
    let out = pcapcast(&["demo", "-q", "--socket", socket.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(socket.to_str().unwrap()),
        "the message names the socket: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing is left beside the socket"
    );
}
