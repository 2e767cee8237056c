//! `aq key gen|show|trust`: signing keys and the trust policy.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aq_pack::keys::{PublicKey, SecretKey};
use aq_pack::trust::TrustedKey;
use serde::Serialize;

use crate::cli::{KeyGenArgs, KeyShowArgs, KeyTrustArgs};
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::settings::Settings;

#[derive(Serialize)]
struct KeyInfo {
    key_id: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_key_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key_file: Option<String>,
}

fn pub_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn write_new(path: &Path, contents: &str, mode: u32, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            user_error(
                ExitCode::Conflict,
                format!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                ),
            )
        } else {
            anyhow::Error::new(e).context(format!("failed to create {}", path.display()))
        }
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", path.display()))
}

pub fn gen_key(args: KeyGenArgs, printer: &Printer) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("failed to get randomness from the operating system")?;
    let secret = SecretKey::from_seed(seed);
    let public = secret.public_key();
    let pub_file = pub_path(&args.out);
    write_new(&args.out, &secret.to_file_text(), 0o600, args.force)?;
    if args.force {
        // A pre-existing file keeps its mode under truncate; make sure it is private.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&args.out, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("failed to restrict {}", args.out.display()))?;
    }
    write_new(&pub_file, &format!("{public}\n"), 0o644, args.force)?;
    let info = KeyInfo {
        key_id: public.key_id(),
        public_key: public.to_string(),
        secret_key_file: Some(args.out.display().to_string()),
        public_key_file: Some(pub_file.display().to_string()),
    };
    printer.result(&info, || {
        format!(
            "Generated key {}\n  secret key  {} (mode 0600: keep it private)\n  public key  {}\n  {}",
            info.key_id,
            args.out.display(),
            pub_file.display(),
            info.public_key
        )
    });
    Ok(())
}

/// Reads a public key from a literal, a .pub file, or a secret key file.
fn load_public(spec: &str) -> anyhow::Result<PublicKey> {
    if spec.starts_with("ed25519:") {
        return Ok(spec.parse::<PublicKey>()?);
    }
    let text =
        fs::read_to_string(spec).with_context(|| format!("failed to read key file {spec}"))?;
    if let Ok(key) = text.trim().parse::<PublicKey>() {
        return Ok(key);
    }
    let secret = SecretKey::from_file_text(&text)
        .with_context(|| format!("{spec} is neither a public key nor an aq secret key file"))?;
    Ok(secret.public_key())
}

/// Reads the secret key used to sign packs.
pub fn load_secret(path: &Path) -> anyhow::Result<SecretKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("failed to read secret key {}", path.display()))?;
    SecretKey::from_file_text(&text).with_context(|| format!("in key file {}", path.display()))
}

pub fn show(args: KeyShowArgs, printer: &Printer) -> anyhow::Result<()> {
    let public = load_public(&args.key)?;
    let info = KeyInfo {
        key_id: public.key_id(),
        public_key: public.to_string(),
        secret_key_file: None,
        public_key_file: None,
    };
    printer.result(&info, || {
        format!("{}\nkey id: {}", info.public_key, info.key_id)
    });
    Ok(())
}

pub fn trust(args: KeyTrustArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let public = load_public(&args.key)?;
    let path = args.policy.clone().unwrap_or_else(|| settings.trust_file());
    let mut policy = if path.exists() {
        super::read_policy(&path)?
    } else {
        aq_pack::TrustPolicy::empty()
    };
    let not_after = args
        .not_after
        .as_deref()
        .map(humantime::parse_rfc3339)
        .transpose()
        .map_err(|e| user_error(ExitCode::InvalidInput, format!("--not-after: {e}")))?;
    policy.keys.push(TrustedKey {
        label: args.label.clone().unwrap_or_else(|| public.key_id()),
        public_key: public,
        packs: args.packs.clone(),
        not_before: None,
        not_after,
        revoked: false,
    });
    let text = policy.to_toml();
    // Check what we write reads back the same before replacing the file.
    aq_pack::TrustPolicy::parse(&text).context("refusing to write a policy that does not parse")?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let tmp = path.with_extension("toml.tmp");
    fs::write(&tmp, &text).with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("failed to replace {}", path.display()))?;
    #[derive(Serialize)]
    struct Out {
        policy: String,
        key_id: String,
        packs: Vec<String>,
    }
    let out = Out {
        policy: path.display().to_string(),
        key_id: public.key_id(),
        packs: args.packs,
    };
    printer.result(&out, || {
        format!(
            "Trusted key {} for packs {} in {}",
            out.key_id,
            out.packs.join(", "),
            out.policy
        )
    });
    Ok(())
}
