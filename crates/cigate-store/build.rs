//! Embeds the SQL migrations: writes `$OUT_DIR/migrations.rs` with one
//! `(version, description, SQL)` per file of `migrations/<backend>/`, in version order,
//! read from the file names as sqlx's own resolver reads them (`0006_events.sql` is
//! version 6, "events"). This replaces `sqlx::migrate!`, whose proc-macro builds a second
//! copy of sqlx and SQLite for the host; `db::tests` hold the result to sqlx's resolver.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=migrations");
    let root = Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("migrations");
    let mut out = String::new();
    for backend in ["sqlite", "postgres"] {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(root.join(backend))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("{}: not a UTF-8 file name", path.display()))?
                .to_owned();
            let (version, rest) = name
                .split_once('_')
                .ok_or_else(|| format!("{name}: expected <version>_<description>.sql"))?;
            let version: i64 = version
                .parse()
                .map_err(|_| format!("{name}: the version is not a number"))?;
            let description = rest
                .strip_suffix(".sql")
                .filter(|d| !d.ends_with(".up") && !d.ends_with(".down"))
                .ok_or_else(|| format!("{name}: expected a simple (not reversible) .sql file"))?
                .replace('_', " ");
            files.push((version, description, path));
        }
        files.sort_by_key(|f| f.0);
        writeln!(
            out,
            "pub(crate) const {}: &[(i64, &str, &str)] = &[",
            backend.to_uppercase()
        )?;
        for (version, description, path) in files {
            let path = path.to_str().ok_or("migration path is not UTF-8")?;
            writeln!(
                out,
                "    ({version}, {description:?}, include_str!({path:?})),"
            )?;
        }
        writeln!(out, "];")?;
    }
    let dest = Path::new(&std::env::var("OUT_DIR")?).join("migrations.rs");
    std::fs::write(dest, out)?;
    Ok(())
}
