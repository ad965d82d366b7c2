//! The vswitch's control socket: a unix stream socket (mode 0600) speaking JSON, one request
//! per line and one response per line, served from the control thread by [`CtlServer::poll`]
//! (about every millisecond). Everything is non-blocking and bounded: a client that sends a
//! line longer than [`MAX_LINE`], or does not read its answers, is cut off; at most
//! [`MAX_CLIENTS`] are served at once; an lcore never waits on any of it.
//!
//! ```text
//! -> {"v":1,"cmd":"show","args":["ports"]}
//! <- {"v":1,"ok":true,"result":[...]}
//! <- {"v":1,"ok":false,"error":"unknown command 'shwo': ..."}
//! ```
//!
//! The reference of the commands is in docs/operations.md.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::AppError;

/// The protocol version: requests carry `"v":1`, responses too.
pub const PROTOCOL: u64 = 1;
/// Where `fastpath vswitch` listens and `fastpath ctl` connects by default.
pub const DEFAULT_PATH: &str = "/run/fastpath/vswitch.ctl";
/// Longest request line, bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// Answers a client may leave unread, bytes, before it is cut off.
const MAX_UNREAD: usize = 64 << 20;
/// Requests taken from one client per poll.
const REQUESTS_PER_POLL: usize = 8;

/// A request: a command and its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The command (`show`, `stats`, `fdb`, ...).
    pub cmd: String,
    /// Its words (`["ports"]`, `["add", "br0", "02:00:00:00:00:01", "port=vm1"]`).
    pub args: Vec<String>,
}

impl Request {
    /// Reads one request line.
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let v: Value = serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let Some(o) = v.as_object() else { return Err("not a JSON object".into()) };
        match o.get("v").and_then(Value::as_u64) {
            Some(PROTOCOL) => {}
            Some(n) => return Err(format!("protocol version {n} is not served: use \"v\":{PROTOCOL}")),
            None => return Err(format!("no protocol version: give \"v\":{PROTOCOL}")),
        }
        let Some(cmd) = o.get("cmd").and_then(Value::as_str) else {
            return Err("no command: give \"cmd\":\"NAME\"".into());
        };
        let args = match o.get("args") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|w| w.as_str().map(str::to_owned).ok_or("\"args\" must be a list of strings"))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("\"args\" must be a list of strings".into()),
        };
        Ok(Request { cmd: cmd.to_owned(), args })
    }

    /// The request as one line (no newline).
    pub fn to_line(&self) -> String {
        json!({"v": PROTOCOL, "cmd": self.cmd, "args": self.args}).to_string()
    }
}

/// The response line to a request (no newline).
pub fn response(r: Result<Value, String>) -> String {
    match r {
        Ok(result) => json!({"v": PROTOCOL, "ok": true, "result": result}),
        Err(error) => json!({"v": PROTOCOL, "ok": false, "error": error}),
    }
    .to_string()
}

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    /// No more requests are read (end of input, an error, a line too long); it goes once its
    /// answers are written.
    closing: bool,
}

/// Why the socket could not be made.
#[derive(Debug)]
pub struct BindError {
    /// What to report.
    pub error: AppError,
    /// The cause was a permission denied (a user who may not write the default directory).
    pub denied: bool,
}

/// The listening socket and its clients.
#[derive(Debug)]
pub struct CtlServer {
    listener: UnixListener,
    path: PathBuf,
    inode: u64,
    clients: Vec<Client>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("input", &self.input.len()).field("output", &self.output.len()).finish()
    }
}

impl CtlServer {
    /// Listens on `path` (creating its directory), mode 0600. Refuses when another process
    /// answers on it; removes a socket file nobody answers on (left by a crash).
    pub fn bind(path: &Path) -> Result<CtlServer, BindError> {
        let fail = |what: String| BindError {
            error: AppError::Failed(format!("--ctl {}: {what}", path.display())),
            denied: false,
        };
        let io = |what: &str, e: std::io::Error| BindError {
            denied: e.kind() == ErrorKind::PermissionDenied,
            ..fail(format!("{what}: {e}"))
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io(&format!("cannot create {}", dir.display()), e))?;
        }
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(fail("the path exists and is not a socket: remove it or give another path".into()));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(fail(
                    "another fastpath vswitch is listening on this control socket: stop it, or give this one \
                     another --ctl path"
                        .into(),
                ));
            }
            std::fs::remove_file(path).map_err(|e| io("cannot remove the stale socket", e))?;
            log::info!("removed the stale control socket {}", path.display());
        }
        // Bound under a temporary name and renamed once it is 0600, so that nobody connects
        // through wider permissions in between.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(|e| io("cannot listen", e))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io("cannot place the socket", e));
        }
        listener.set_nonblocking(true).map_err(|e| io("cannot make it non-blocking", e))?;
        let inode = std::fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(CtlServer { listener, path: path.to_owned(), inode, clients: Vec::new() })
    }

    /// Accepts new clients, answers the complete requests that arrived (with `handle`), writes
    /// what the sockets take, and drops finished or misbehaving clients. Never blocks.
    pub fn poll(&mut self, mut handle: impl FnMut(&Request) -> Result<Value, String>) {
        self.accept();
        for c in &mut self.clients {
            c.read();
            let mut served = 0;
            while served < REQUESTS_PER_POLL {
                let Some(nl) = c.input.iter().position(|&b| b == b'\n') else { break };
                let line: Vec<u8> = c.input.drain(..=nl).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let answer = Request::parse(line).and_then(|r| handle(&r));
                c.output.extend_from_slice(response(answer).as_bytes());
                c.output.push(b'\n');
                served += 1;
            }
            if c.input.len() > MAX_LINE && !c.input.contains(&b'\n') {
                let e = format!("request line longer than {MAX_LINE} bytes: closing");
                c.output.extend_from_slice(response(Err(e)).as_bytes());
                c.output.push(b'\n');
                c.input.clear();
                c.closing = true;
            }
            c.write();
        }
        self.clients.retain(|c| {
            let done = c.closing && c.output.is_empty() && !c.input.contains(&b'\n');
            !done && c.output.len() <= MAX_UNREAD
        });
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let mut c = Client { stream, input: Vec::new(), output: Vec::new(), closing: false };
                    if self.clients.len() >= MAX_CLIENTS {
                        let e = format!("{MAX_CLIENTS} clients are connected already: try again later");
                        c.output.extend_from_slice(response(Err(e)).as_bytes());
                        c.output.push(b'\n');
                        c.write();
                        continue;
                    }
                    self.clients.push(c);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

impl Client {
    /// Reads what is there (up to one line's worth more than a full line).
    fn read(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        while !self.closing && self.input.len() <= MAX_LINE {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closing = true,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.closing = true;
                    self.output.clear();
                }
            }
        }
    }

    fn write(&mut self) {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.output.clear();
                    self.closing = true;
                }
            }
        }
    }
}

impl Drop for CtlServer {
    /// Removes the socket file, unless another process has put its own there since.
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_what_is_wrong() {
        let r = Request::parse(br#"{"v":1,"cmd":"show","args":["ports"]}"#).unwrap();
        assert_eq!(r, Request { cmd: "show".into(), args: vec!["ports".into()] });
        assert_eq!(Request::parse(r.to_line().as_bytes()).unwrap(), r);
        assert_eq!(Request::parse(br#"{"v":1,"cmd":"stats"}"#).unwrap().args, Vec::<String>::new());
        assert!(Request::parse(b"show ports").unwrap_err().contains("not a JSON object"));
        assert!(Request::parse(br#"{"cmd":"show"}"#).unwrap_err().contains("no protocol version"));
        assert!(Request::parse(br#"{"v":2,"cmd":"show"}"#).unwrap_err().contains("version 2 is not served"));
        assert!(Request::parse(br#"{"v":1}"#).unwrap_err().contains("no command"));
        assert!(Request::parse(br#"{"v":1,"cmd":"x","args":[1]}"#).unwrap_err().contains("list of strings"));
        assert_eq!(response(Ok(json!(3))), r#"{"ok":true,"result":3,"v":1}"#);
    }
}
