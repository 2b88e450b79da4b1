//! A small real SMTP server for tests, on loopback over TCP: EHLO/HELO, MAIL FROM, RCPT TO,
//! DATA (dot-unstuffed), RSET, NOOP, QUIT. It keeps every message it accepted; a mode makes it
//! refuse recipients and data for good (`554`) or for now (`451`); it can stop and come back on
//! the same port. Plus just enough MIME decoding to read what lettre sent.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use super::eventually;
use base64::Engine as _;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::{JoinHandle, JoinSet},
};

/// How the server answers `RCPT TO` and `DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Accepts everything.
    #[default]
    Accept,
    /// `554 5.7.1 rejected` (permanent).
    RejectPermanent,
    /// `451 4.3.0 try later` (transient).
    RejectTransient,
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// `MAIL FROM` address.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The raw data (headers and body, CRLF lines, dot-unstuffed, without the final dot).
    pub data: String,
}

#[derive(Default)]
struct State {
    messages: Mutex<Vec<Received>>,
    mode: Mutex<Mode>,
}

/// The server. Dropping it stops it.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: Option<JoinHandle<()>>,
}

impl SmtpServer {
    /// A server on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// A server on `port` (0: a free one), with no messages yet.
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the test SMTP server");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let task = tokio::spawn(accept(listener, state.clone()));
        Self {
            port,
            state,
            task: Some(task),
        }
    }

    /// Its URL for `SMTP_URL` (plain SMTP, no TLS).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Changes how it answers.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// The messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().expect("messages").clone()
    }

    /// Waits until `n` messages were accepted; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} emails received"), || async {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }

    /// Closes the listener and every open connection: connecting is refused until a server
    /// starts on the port again.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    // owned here: aborting this task drops the set, which aborts every connection
    let mut connections = JoinSet::new();
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            connections.spawn(session(stream, state.clone()));
        }
        while connections.try_join_next().is_some() {}
    }
}

fn address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].trim().to_owned()
}

async fn session(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 comet-test ESMTP ready\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let command = text.trim_end_matches(['\r', '\n']);
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let mode = *state.mode.lock().expect("mode");
        let reply: &str = match verb.as_str() {
            "EHLO" => "250-comet-test greets you\r\n250-8BITMIME\r\n250 SMTPUTF8",
            "HELO" => "250 comet-test",
            "MAIL" => {
                from = Some(address(&command[4..]));
                to.clear();
                "250 2.1.0 OK"
            }
            "RCPT" => match mode {
                Mode::Accept if from.is_some() => {
                    to.push(address(&command[4..]));
                    "250 2.1.5 OK"
                }
                Mode::Accept => "503 5.5.1 MAIL first",
                Mode::RejectPermanent => "554 5.7.1 rejected",
                Mode::RejectTransient => "451 4.3.0 try later",
            },
            "DATA" => match mode {
                Mode::RejectPermanent => "554 5.7.1 rejected",
                Mode::RejectTransient => "451 4.3.0 try later",
                Mode::Accept if from.is_none() || to.is_empty() => "503 5.5.1 MAIL and RCPT first",
                Mode::Accept => {
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let mut data = Vec::new();
                    loop {
                        line.clear();
                        if read.read_until(b'\n', &mut line).await? == 0 {
                            return Ok(());
                        }
                        if line == b".\r\n" || line == b".\n" {
                            break;
                        }
                        // dot-unstuffing: a line starting with a dot was sent with two
                        let start = usize::from(line.starts_with(b".."));
                        data.extend_from_slice(&line[start..]);
                    }
                    state.messages.lock().expect("messages").push(Received {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data: String::from_utf8_lossy(&data).into_owned(),
                    });
                    "250 2.0.0 OK queued"
                }
            },
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK"
            }
            "NOOP" => "250 2.0.0 OK",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 command not recognized",
        };
        write.write_all(reply.as_bytes()).await?;
        write.write_all(b"\r\n").await?;
    }
}

/// A received email, decoded: its headers and its text and HTML parts.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// Headers (unfolded), in order.
    pub headers: Vec<(String, String)>,
    /// The `text/plain` part, decoded.
    pub text: String,
    /// The `text/html` part, decoded.
    pub html: String,
}

impl Parsed {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_headers(raw: &str) -> (Vec<(String, String)>, &str) {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

fn decode(encoding: &str, body: &str) -> String {
    match encoding.to_ascii_lowercase().as_str() {
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let bytes = joined.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'='
                    && i + 2 < bytes.len()
                    && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
                {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(bytes[i]);
                i += 1;
            }
            String::from_utf8(out).expect("utf-8 body")
        }
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .expect("base64 body");
            String::from_utf8(bytes).expect("utf-8 body")
        }
        _ => body.to_owned(),
    }
}

impl Received {
    /// Decodes a `multipart/alternative` message (or a single text part).
    pub fn parse(&self) -> Parsed {
        let (headers, body) = split_headers(&self.data);
        let mut parsed = Parsed {
            headers: headers.clone(),
            ..Parsed::default()
        };
        let content_type = header(&headers, "Content-Type");
        let boundary = content_type
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("boundary="))
            .next()
            .map(|b| b.trim_matches('"').to_owned());
        let parts: Vec<(Vec<(String, String)>, String)> = match boundary {
            Some(b) => body
                .split(&format!("--{b}"))
                .skip(1)
                .filter(|p| !p.starts_with("--"))
                .map(|p| {
                    let (h, b) = split_headers(p.trim_start_matches("\r\n"));
                    (h, b.trim_end_matches("\r\n").to_owned())
                })
                .collect(),
            None => vec![(headers.clone(), body.to_owned())],
        };
        for (h, b) in parts {
            let decoded = decode(header(&h, "Content-Transfer-Encoding"), &b);
            let ct = header(&h, "Content-Type").to_ascii_lowercase();
            if ct.starts_with("text/plain") {
                parsed.text = decoded;
            } else if ct.starts_with("text/html") {
                parsed.html = decoded;
            }
        }
        parsed
    }
}
