//! A server on a test host's link reached at one loopback URL from this machine and from
//! inside the test host's namespace alike. anycloud sends credentials over plain http only
//! to loopback, and a VM's rclone is given the same endpoint as the operator: each side gets
//! a relay listening on its own 127.0.0.1 at the same port, passing bytes on to the server.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Relay {
    /// `http://127.0.0.1:PORT`, what the config's endpoint is set to.
    pub url: String,
    inside: Child,
}

/// The namespace's relay (its python3, as the tests' metadata services).
const INSIDE: &str = r#"
import socket, sys, threading
port, up_host, up_port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def serve(c):
    try:
        u = socket.create_connection((up_host, up_port))
    except OSError:
        c.close()
        return
    t = threading.Thread(target=pipe, args=(c, u), daemon=True)
    t.start()
    pipe(u, c)
    t.join()
    c.close()
    u.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(256)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Relay {
    /// A relay to `upstream` (`http://IP:PORT`, on the link of the test host in `namespace`).
    pub fn start(namespace: &str, upstream: &str) -> Relay {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let (up_host, up_port) = target.rsplit_once(':').expect("http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to = target.clone();
        // Lives as long as the test process: a listener thread has no other end.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&to) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        let inside = Command::new("ip")
            .args(["netns", "exec", namespace, "python3", "-c", INSIDE])
            .args([&port.to_string(), up_host, up_port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = Command::new("ip")
                .args(["netns", "exec", namespace, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the relay in {namespace} did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Relay {
            url: format!("http://127.0.0.1:{port}"),
            inside,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.inside.kill();
        let _ = self.inside.wait();
    }
}
