//! Fault injection helpers: a TCP proxy that can cut every connection through it or refuse
//! connections for a while (an outage), an HTTP/1.1 server that records what it receives, and
//! a process's resident memory.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Resident set size of process `pid`, in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A TCP proxy on 127.0.0.1 in front of `127.0.0.1:to`.
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections cut by [`Proxy::cut`].
    pub cuts: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Proxy {
            port,
            down: Arc::default(),
            open: Arc::default(),
            cuts: Arc::default(),
        };
        let (down, open) = (proxy.down.clone(), proxy.open.clone());
        std::thread::spawn(move || {
            let mut listener = Some(listener);
            loop {
                if down.load(Ordering::SeqCst) {
                    // Closed: connections are refused, as by a host that is gone.
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener.insert(l)
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                l.set_nonblocking(true).unwrap();
                let client = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let mut registry = open.lock().unwrap();
                registry.retain(|s| s.peer_addr().is_ok());
                registry.push(client.try_clone().unwrap());
                registry.push(server.try_clone().unwrap());
                drop(registry);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        proxy
    }

    /// Cuts every connection through the proxy now (both ends see a reset or an EOF).
    pub fn cut(&self) {
        let mut open = self.open.lock().unwrap();
        for s in open.drain(..) {
            if s.shutdown(Shutdown::Both).is_ok() {
                self.cuts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts (`true`) or ends an outage: open connections are cut and new ones refused.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
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
    });
}

/// An HTTP/1.1 server (keep-alive) that answers 200 after `delay` to every request read whole.
pub struct HttpReceiver {
    pub port: u16,
    /// Body bytes received.
    pub bytes: Arc<AtomicU64>,
    /// Every body, in arrival order, when recording.
    bodies: Option<Arc<Mutex<Vec<u8>>>>,
}

impl HttpReceiver {
    /// `record`: keep every body (see [`HttpReceiver::text`]).
    pub fn start(delay: Duration, record: bool) -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = HttpReceiver {
            port,
            bytes: Arc::default(),
            bodies: record.then(Arc::default),
        };
        let (bytes, bodies) = (r.bytes.clone(), r.bodies.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (bytes, bodies) = (bytes.clone(), bodies.clone());
                std::thread::spawn(move || serve(conn, delay, &bytes, bodies.as_deref()));
            }
        });
        r
    }

    /// Everything received so far, bodies concatenated.
    pub fn text(&self) -> String {
        let bodies = self.bodies.as_ref().expect("a recording receiver");
        String::from_utf8_lossy(&bodies.lock().unwrap()).into_owned()
    }
}

fn serve(conn: TcpStream, delay: Duration, bytes: &AtomicU64, bodies: Option<&Mutex<Vec<u8>>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        bytes.fetch_add(length as u64, Ordering::Relaxed);
        if let Some(b) = bodies {
            b.lock().unwrap().extend_from_slice(&body);
        }
        std::thread::sleep(delay);
        if conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}
