//! A minimal SMTP server on loopback that keeps every message it receives, and a MIME
//! reader good enough for what lettre sends (one level of multipart/alternative, 7bit,
//! quoted-printable or base64 parts).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct ReceivedMail {
    pub(crate) mail_from: String,
    pub(crate) rcpt_to: Vec<String>,
    /// The DATA section, dot-unstuffed, CRLF line ends.
    pub(crate) data: String,
}

pub(crate) struct SmtpSink {
    pub(crate) addr: SocketAddr,
    received: Arc<Mutex<Vec<ReceivedMail>>>,
}

impl SmtpSink {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, store.clone()));
            }
        });
        Self { addr, received }
    }

    pub(crate) fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub(crate) fn messages(&self) -> Vec<ReceivedMail> {
        self.received.lock().unwrap().clone()
    }
}

fn angle_address(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_owned()
}

async fn session(stream: TcpStream, store: Arc<Mutex<Vec<ReceivedMail>>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let _ = write.write_all(b"220 sink ESMTP ready\r\n").await;
    let mut from = String::new();
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let answer = if upper.starts_with("EHLO") {
            "250-sink\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") {
            "250 sink\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = angle_address(&command[10..]);
            rcpt.clear();
            "250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            rcpt.push(angle_address(&command[8..]));
            "250 OK\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            store.lock().unwrap().push(ReceivedMail {
                mail_from: from.clone(),
                rcpt_to: rcpt.clone(),
                data,
            });
            "250 OK queued\r\n"
        } else if upper == "RSET" || upper == "NOOP" {
            "250 OK\r\n"
        } else if upper == "QUIT" {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            "502 not implemented\r\n"
        };
        if write.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A parsed message: unfolded top-level headers and the decoded text / HTML bodies.
#[derive(Debug)]
pub(crate) struct Mail {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) text: Option<String>,
    pub(crate) html: Option<String>,
}

impl Mail {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn split_head(raw: &str) -> (Vec<(String, String)>, &str) {
    let raw = raw.trim_start_matches("\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    (headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map_or("", |(_, v)| v.as_str())
}

fn decode(body: &str, encoding: &str) -> String {
    match encoding.to_ascii_lowercase().as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .unwrap(),
            )
            .unwrap()
        }
        "quoted-printable" => {
            let mut out = Vec::new();
            let bytes = body.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' {
                    if bytes[i + 1..].starts_with(b"\r\n") {
                        i += 3;
                        continue;
                    }
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        }
        _ => body.to_owned(),
    }
}

pub(crate) fn parse_mail(raw: &str) -> Mail {
    let (headers, body) = split_head(raw);
    let content_type = header(&headers, "Content-Type").to_owned();
    let mut text = None;
    let mut html = None;
    let mut take = |part_headers: &[(String, String)], part_body: &str| {
        let ct = header(part_headers, "Content-Type").to_ascii_lowercase();
        // SMTP carries CRLF line ends; compare bodies with the renderers' LF.
        let decoded = decode(part_body, header(part_headers, "Content-Transfer-Encoding"))
            .replace("\r\n", "\n");
        if ct.starts_with("text/html") {
            html = Some(decoded);
        } else if ct.starts_with("text/plain") {
            text = Some(decoded);
        }
    };
    if content_type.to_ascii_lowercase().starts_with("multipart/") {
        let boundary = content_type
            .split(';')
            .find_map(|p| p.trim().strip_prefix("boundary="))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let delimiter = format!("--{boundary}");
        for part in body.split(delimiter.as_str()).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let (part_headers, part_body) = split_head(part);
            take(&part_headers, part_body.trim_end_matches("\r\n"));
        }
    } else {
        take(&headers, body.trim_end_matches("\r\n"));
    }
    Mail {
        headers,
        text,
        html,
    }
}
