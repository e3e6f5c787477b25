//! Every test binary built on the harness logs at `CIGATE_LOG` (`trace` unless set), for
//! every crate (cigate's, hyper's, sqlx's, rustls's), into memory, so every scenario of
//! the suite also checks that no secret reaches the log: a harness, when dropped, fails
//! its test if the log holds a secret it handled (the API token, every credential the
//! simulator handed out, what the test registered) or anything shaped like one of
//! cigate's own secrets (API tokens, link tokens, webhook signing secrets), whoever
//! logged it.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The process's log, kept in memory.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

static LOG: OnceLock<Captured> = OnceLock::new();

/// The process's log, capturing from the first call on.
pub fn log() -> &'static Captured {
    LOG.get_or_init(|| {
        let log = Captured::default();
        let filter = std::env::var("CIGATE_LOG").unwrap_or_else(|_| "trace".into());
        // Another subscriber already installed (a test of its own) wins; the checks
        // then see nothing, which `check` says when a test relies on them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(log.clone())
            .with_ansi(false)
            .try_init();
        log
    })
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Prefixes of cigate's own secrets, and the shortest random part each has.
const SHAPES: &[(&str, &str, usize)] = &[
    ("an API token", "cgt_", 40),
    ("a link token", "clt_", 40),
    ("a webhook signing secret", "whsec_", 32),
];

/// The first secret of a known shape in `text`: its kind and where it starts.
pub fn find_shaped(text: &str) -> Option<(&'static str, usize)> {
    let random = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'+' | b'/');
    SHAPES.iter().find_map(|&(kind, prefix, len)| {
        text.match_indices(prefix).find_map(|(at, _)| {
            let tail = &text.as_bytes()[at + prefix.len()..];
            let n = tail.iter().take_while(|&&c| random(c)).count();
            (n >= len).then_some((kind, at))
        })
    })
}

/// The line around `at`, with what starts there (`len` bytes) masked.
pub fn context(text: &str, at: usize, len: usize) -> String {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let end_secret = (at + len).min(end);
    format!("{}<secret>{}", &text[start..at], &text[end_secret..end])
}

/// Fails (panics) when the log holds one of `secrets` or a secret of a known shape.
pub fn check(secrets: &[(String, String)]) {
    let text = log().text();
    for (kind, secret) in secrets {
        if secret.len() < 8 {
            continue;
        }
        if let Some(at) = text.find(secret.as_str()) {
            panic!(
                "{kind} reached the log: {}",
                context(&text, at, secret.len())
            );
        }
    }
    if let Some((kind, at)) = find_shaped(&text) {
        panic!("{kind} reached the log: {}", context(&text, at, 48));
    }
}
