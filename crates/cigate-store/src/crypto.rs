//! Master keys, the keyring and AES-256-GCM sealing of credentials.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use cigate_core::Secret;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::StoreError;

const NONCE_LEN: usize = 12;

/// One 256-bit master key. Its id (first 8 hex digits of the key's SHA-256) is stored
/// next to every ciphertext so the right key can be picked and rotation can find rows
/// still under an old key. `Debug` shows the id only.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: String,
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = hex::encode(&digest[..4]);
        Self { bytes, id }
    }

    /// Accepts standard or URL-safe base64, padded or not, of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let mut decoded = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| StoreError::Key("a master key is not valid base64".into()))?;
        let result = <[u8; 32]>::try_from(decoded.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| {
                StoreError::Key(format!(
                    "a master key must be 32 bytes (base64 of 32 random bytes), got {} bytes",
                    decoded.len()
                ))
            });
        decoded.zeroize();
        result
    }

    /// The key as standard base64, wrapped so it is only printed on purpose.
    pub fn to_base64(&self) -> Secret {
        Secret::new(STANDARD.encode(self.bytes))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.bytes).into())
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id={})", self.id)
    }
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.bytes == other.bytes
    }
}

/// The current key (encrypts) followed by older keys (decrypt only).
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey) -> Self {
        Self {
            keys: vec![current],
        }
    }

    pub fn generate() -> Self {
        Self::new(MasterKey::generate())
    }

    /// Adds a decrypt-only key (ignored if already present).
    pub fn with_old(mut self, key: MasterKey) -> Self {
        self.add_old(key);
        self
    }

    /// Parses the `CIGATE_MASTER_KEY` / key-file syntax: base64 keys separated by commas,
    /// whitespace or newlines, `#` starting a comment line; the first key is current.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            for item in line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
            {
                let key = MasterKey::from_base64(item)?;
                if let Some(existing) = keys.iter().find(|k| k.id == key.id) {
                    if existing != &key {
                        return Err(StoreError::Key(format!(
                            "two different keys share the key id {}; generate another key",
                            key.id
                        )));
                    }
                    continue;
                }
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(StoreError::Key("no master key given".into()));
        }
        Ok(Self { keys })
    }

    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    pub(crate) fn add_old(&mut self, key: MasterKey) {
        if self.get(&key.id).is_none() {
            self.keys.push(key);
        }
    }

    /// Makes `key` current, keeping every other key for decryption.
    pub(crate) fn promote(&mut self, key: MasterKey) {
        self.keys.retain(|k| k.id != key.id);
        self.keys.insert(0, key);
    }

    /// Keeps only the current key.
    pub(crate) fn retire_old(&mut self) {
        self.keys.truncate(1);
    }

    /// Merges a freshly read keyring: its current key becomes ours, keys we knew stay
    /// readable (a row written by a slower process may still use them).
    pub(crate) fn merge_reloaded(&mut self, fresh: Keyring) {
        let mut merged = fresh;
        for key in self.keys.drain(..) {
            merged.add_old(key);
        }
        *self = merged;
    }

    fn to_file_text(&self) -> String {
        let mut out = String::from(
            "# cigate master keys. The first key encrypts; every key listed decrypts.\n\
             # Keep this file secret (mode 0600) and backed up: without it the stored\n\
             # credentials cannot be read.\n",
        );
        for key in &self.keys {
            out.push_str(key.to_base64().expose());
            out.push('\n');
        }
        out
    }
}

/// Where the master key comes from.
#[derive(Clone)]
pub enum KeyConfig {
    /// The value of `CIGATE_MASTER_KEY`: one or more base64 keys separated by commas,
    /// the first current. Read by the caller; the store never reads the environment.
    Env(String),
    /// A key file, created with mode 0600 holding one fresh key if it does not exist
    /// (and the database holds no encrypted data yet).
    File(PathBuf),
    /// An in-memory keyring (tests, tools). Rotation changes it in memory only.
    Keys(Keyring),
}

/// File name of the key file kept beside a SQLite database.
pub const KEY_FILE_NAME: &str = "cigate.key";

impl KeyConfig {
    /// The usual choice: `CIGATE_MASTER_KEY`'s value if set (and non-empty), else the
    /// explicit key file, else `cigate.key` beside the SQLite database. PostgreSQL with
    /// neither is an error: instances sharing a database must share a key, so it has to
    /// be given explicitly.
    pub fn resolve(
        master_key: Option<String>,
        key_file: Option<PathBuf>,
        database_url: &str,
    ) -> Result<KeyConfig, StoreError> {
        if let Some(value) = master_key.filter(|v| !v.trim().is_empty()) {
            return Ok(KeyConfig::Env(value));
        }
        if let Some(path) = key_file {
            return Ok(KeyConfig::File(path));
        }
        sqlite_key_file(database_url)
            .map(KeyConfig::File)
            .ok_or_else(|| {
                StoreError::Key(
                    "no master key: set CIGATE_MASTER_KEY (base64 of 32 bytes) or give a key file"
                        .into(),
                )
            })
    }
}

/// `cigate.key` in the directory of the SQLite database named by `database_url`; `None`
/// for PostgreSQL and in-memory SQLite.
pub fn sqlite_key_file(database_url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if !database_url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(database_url).ok()?;
    let file = options.get_filename();
    let name = file.to_string_lossy();
    if name.is_empty() || name.starts_with(':') || name.starts_with("file:") {
        return None;
    }
    let dir = file.parent().unwrap_or_else(|| Path::new(""));
    Some(dir.join(KEY_FILE_NAME))
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyConfig::Env(_) => f.write_str("Env([redacted])"),
            KeyConfig::File(path) => f.debug_tuple("File").field(path).finish(),
            KeyConfig::Keys(ring) => f.debug_tuple("Keys").field(&ring.key_ids()).finish(),
        }
    }
}

/// A ciphertext as stored: which key, the 96-bit nonce, ciphertext with the GCM tag.
#[derive(Clone, Debug)]
pub(crate) struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

pub(crate) fn seal(key: &MasterKey, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StoreError::Crypto("encryption failed".into()))?;
    Ok(Sealed {
        key_id: key.id.clone(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

pub(crate) fn open(key: &MasterKey, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, StoreError> {
    if sealed.nonce.len() != NONCE_LEN {
        return Err(StoreError::Crypto(
            "stored nonce has the wrong length".into(),
        ));
    }
    key.cipher()
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| {
            StoreError::Crypto(format!(
                "ciphertext under key id {} failed authentication (tampered, moved to another \
                 row, or sealed with a different key)",
                sealed.key_id
            ))
        })
}

/// What identifies one version of the key file, to notice another process rewrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    /// Atomic rewrites rename a new file into place, so the inode always changes.
    inode: u64,
}

pub(crate) fn file_stamp(path: &Path) -> Result<Option<FileStamp>, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode: inode(&meta),
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(StoreError::io(path, err)),
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Reads the key file, `None` if it does not exist.
pub(crate) fn read_key_file(path: &Path) -> Result<Option<(Keyring, FileStamp)>, StoreError> {
    let Some(stamp) = file_stamp(path)? else {
        return Ok(None);
    };
    let mut text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::io(path, err)),
    };
    warn_if_readable_by_others(path);
    let parsed = Keyring::parse(&text).map_err(|err| match err {
        StoreError::Key(msg) => StoreError::Key(format!("key file {}: {msg}", path.display())),
        other => other,
    });
    text.zeroize();
    Ok(Some((parsed?, stamp)))
}

/// Creates the key file exclusively; if another process won the race, reads theirs.
pub(crate) fn create_key_file(
    path: &Path,
    ring: &Keyring,
) -> Result<(Keyring, FileStamp), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    }
    match open_private(path, true) {
        Ok(mut file) => {
            write_and_sync(&mut file, path, ring)?;
            let stamp = file_stamp(path)?.ok_or_else(|| {
                StoreError::Key(format!(
                    "key file {} vanished after creation",
                    path.display()
                ))
            })?;
            tracing::info!(path = %path.display(), key_id = ring.current().id(), "created master key file");
            Ok((ring.clone(), stamp))
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| {
                StoreError::Key(format!(
                    "key file {} vanished while opening it",
                    path.display()
                ))
            }),
        Err(err) => Err(StoreError::io(path, err)),
    }
}

/// Replaces the key file atomically (temporary file with mode 0600, fsync, rename).
pub(crate) fn write_key_file(path: &Path, ring: &Keyring) -> Result<FileStamp, StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = PathBuf::from(tmp);
    let mut file = open_private(&tmp, true).map_err(|e| StoreError::io(&tmp, e))?;
    if let Err(err) = write_and_sync(&mut file, &tmp, ring) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::io(path, e)
    })?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    file_stamp(path)?.ok_or_else(|| {
        StoreError::Key(format!(
            "key file {} vanished after writing",
            path.display()
        ))
    })
}

fn write_and_sync(file: &mut std::fs::File, path: &Path, ring: &Keyring) -> Result<(), StoreError> {
    use std::io::Write;
    let mut text = ring.to_file_text();
    let result = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(path, e));
    text.zeroize();
    result
}

pub(crate) fn open_private(path: &Path, create_new: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(create_new);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "master key file is accessible to other users; chmod 600 it");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_rejects_bad_keys() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let text = format!(
            "# comment\n{}\n{}, {}\n",
            a.to_base64().expose(),
            b.to_base64().expose(),
            a.to_base64().expose()
        );
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.key_ids(), vec![a.id().to_string(), b.id().to_string()]);
        assert!(matches!(Keyring::parse(""), Err(StoreError::Key(_))));
        assert!(matches!(
            Keyring::parse("not base64!"),
            Err(StoreError::Key(_))
        ));
        assert!(matches!(Keyring::parse("AAAA"), Err(StoreError::Key(_))));
        assert_eq!(a.id().len(), 8);
        assert!(!format!("{a:?}").contains(a.to_base64().expose()));
    }

    #[test]
    fn resolves_key_config() {
        let url = "sqlite://data/dir/cigate.db";
        assert_eq!(
            sqlite_key_file(url),
            Some(PathBuf::from("data/dir/cigate.key"))
        );
        assert_eq!(
            sqlite_key_file("sqlite://cigate.db"),
            Some(PathBuf::from("cigate.key"))
        );
        assert_eq!(sqlite_key_file("sqlite::memory:"), None);
        assert_eq!(sqlite_key_file("postgres://h/db"), None);
        assert!(matches!(
            KeyConfig::resolve(Some("k".into()), None, "postgres://h/db"),
            Ok(KeyConfig::Env(_))
        ));
        assert!(matches!(
            KeyConfig::resolve(Some(" ".into()), None, url),
            Ok(KeyConfig::File(p)) if p == Path::new("data/dir/cigate.key")
        ));
        assert!(matches!(
            KeyConfig::resolve(None, Some("/k".into()), "postgres://h/db"),
            Ok(KeyConfig::File(p)) if p == Path::new("/k")
        ));
        assert!(matches!(
            KeyConfig::resolve(None, None, "postgres://h/db"),
            Err(StoreError::Key(_))
        ));
    }

    #[test]
    fn seal_binds_aad_and_key() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"acct-1", b"hello").unwrap();
        assert_eq!(open(&key, b"acct-1", &sealed).unwrap(), b"hello");
        assert!(matches!(
            open(&key, b"acct-2", &sealed),
            Err(StoreError::Crypto(_))
        ));
        let other = MasterKey::generate();
        assert!(matches!(
            open(&other, b"acct-1", &sealed),
            Err(StoreError::Crypto(_))
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(matches!(
            open(&key, b"acct-1", &tampered),
            Err(StoreError::Crypto(_))
        ));
    }

    #[test]
    fn key_file_round_trip_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cigate.key");
        let ring = Keyring::generate();
        let (created, _) = create_key_file(&path, &ring).unwrap();
        assert_eq!(created.key_ids(), ring.key_ids());
        // A second creator reads the first one's key instead of overwriting it.
        let (again, _) = create_key_file(&path, &Keyring::generate()).unwrap();
        assert_eq!(again.key_ids(), ring.key_ids());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut rotated = ring.clone();
        rotated.promote(MasterKey::generate());
        write_key_file(&path, &rotated).unwrap();
        let (read, _) = read_key_file(&path).unwrap().unwrap();
        assert_eq!(read.key_ids(), rotated.key_ids());
    }
}
