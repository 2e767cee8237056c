//! `aq key gen|show|trust`: signing keys and the trust policy.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aq_pack::keys::{PublicKey, SecretKey};
use aq_pack::trust::TrustedKey;
use aq_store::atomic_write::{self, Existing, Mode};
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

fn write_new(path: &Path, contents: &str, mode: Mode, force: bool) -> anyhow::Result<()> {
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    atomic_write::write(path, contents.as_bytes(), mode, existing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            user_error(
                ExitCode::Conflict,
                format!(
                    "{} already exists; pass --force to overwrite it",
                    path.display()
                ),
            )
        } else {
            anyhow::Error::new(e).context(format!("failed to write {}", path.display()))
        }
    })
}

pub fn gen_key(args: KeyGenArgs, printer: &Printer) -> anyhow::Result<()> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("failed to get randomness from the operating system")?;
    let secret = SecretKey::from_seed(seed);
    let public = secret.public_key();
    let pub_file = pub_path(&args.out);
    write_new(&args.out, &secret.to_file_text(), Mode::Private, args.force)?;
    write_new(&pub_file, &format!("{public}\n"), Mode::Public, args.force)?;
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
    atomic_write::write(&path, text.as_bytes(), Mode::Public, Existing::Replace)
        .with_context(|| format!("failed to write {}", path.display()))?;
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
