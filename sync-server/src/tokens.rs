//! API tokens: random secrets shown once, stored only as their blake3 hash, each with a role.

use std::time::SystemTime;

use aq_sync_proto::Role;
use aq_sync_proto::api::TokenInfo;
use base64::Engine as _;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// blake3(secret) hex -> token record (JSON).
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");

/// Every token starts with this, so a leaked one is easy to find in logs and repositories.
pub const TOKEN_PREFIX: &str = "aqt_";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token database error")]
    Database(#[from] redb::Error),
    #[error("token record {0} is corrupt")]
    Corrupt(String),
    #[error("no token with id {0}")]
    NotFound(String),
    #[error("invalid token name {0:?}: use 1 to 64 letters, digits, '.', '_', '-', '@'")]
    BadName(String),
    #[error("failed to draw random bytes for a token")]
    Random(#[source] getrandom::Error),
}

crate::redb_errors_into!(TokenError);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    id: String,
    name: String,
    role: Role,
    created_at: String,
}

/// Who a request is from, once its token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: Role,
}

/// The tokens table in the server's fleet database.
pub struct Tokens<'db> {
    db: &'db Database,
}

fn hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl<'db> Tokens<'db> {
    /// Creates the table (once, at start); [`Tokens::new`] never writes.
    pub fn init(db: &Database) -> Result<(), TokenError> {
        let txn = db.begin_write()?;
        txn.open_table(TOKENS)?;
        txn.commit()?;
        Ok(())
    }

    pub fn new(db: &'db Database) -> Result<Self, TokenError> {
        Ok(Tokens { db })
    }

    /// Makes a new token; the secret is returned once and never stored.
    pub fn create(
        &self,
        name: &str,
        role: Role,
        now: SystemTime,
    ) -> Result<(TokenInfo, String), TokenError> {
        let txn = self.db.begin_write()?;
        let made = create_in(&txn, name, role, now)?;
        txn.commit()?;
        Ok(made)
    }

    /// The caller a secret belongs to, if any.
    pub fn authenticate(&self, secret: &str) -> Result<Option<Caller>, TokenError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        let key = hash(secret);
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let Some(bytes) = table.get(key.as_str())? else {
            return Ok(None);
        };
        let record = decode(&key, bytes.value())?;
        Ok(Some(Caller {
            token_id: record.id,
            name: record.name,
            role: record.role,
        }))
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TOKENS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(info(decode(k.value(), v.value())?));
        }
        out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(out)
    }

    pub fn is_empty(&self) -> Result<bool, TokenError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(TOKENS)?.is_empty()?)
    }

    /// Revokes the token with this id (the first 12 hex digits of its hash).
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, TokenError> {
        let txn = self.db.begin_write()?;
        let removed;
        {
            let mut table = txn.open_table(TOKENS)?;
            let mut found = None;
            for entry in table.iter()? {
                let (k, v) = entry?;
                let record = decode(k.value(), v.value())?;
                if record.id == id {
                    found = Some((k.value().to_owned(), record));
                    break;
                }
            }
            let (key, record) = found.ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
            table.remove(key.as_str())?;
            removed = info(record);
        }
        txn.commit()?;
        Ok(removed)
    }
}

/// Makes a new token inside the caller's write transaction (so a token and the record it is
/// for, an enrolled device, commit together or not at all).
pub fn create_in(
    txn: &redb::WriteTransaction,
    name: &str,
    role: Role,
    now: SystemTime,
) -> Result<(TokenInfo, String), TokenError> {
    if !valid_name(name) {
        return Err(TokenError::BadName(name.to_owned()));
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(TokenError::Random)?;
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let key = hash(&secret);
    let record = TokenRecord {
        id: key[..12].to_owned(),
        name: name.to_owned(),
        role,
        created_at: humantime::format_rfc3339_seconds(now).to_string(),
    };
    let bytes = serde_json::to_vec(&record).map_err(|e| TokenError::Corrupt(e.to_string()))?;
    txn.open_table(TOKENS)?
        .insert(key.as_str(), bytes.as_slice())?;
    Ok((info(record), secret))
}

fn decode(key: &str, bytes: &[u8]) -> Result<TokenRecord, TokenError> {
    serde_json::from_slice(bytes)
        .map_err(|e| TokenError::Corrupt(format!("{}: {e}", &key[..12.min(key.len())])))
}

fn info(r: TokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id,
        name: r.name,
        role: r.role,
        created_at: r.created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("fleet.redb")).unwrap();
        Tokens::init(&db).unwrap();
        let tokens = Tokens::new(&db).unwrap();
        assert!(tokens.is_empty().unwrap());
        let now = SystemTime::now();
        let (info, secret) = tokens.create("ci", Role::Publisher, now).unwrap();
        assert!(secret.starts_with(TOKEN_PREFIX));
        let caller = tokens.authenticate(&secret).unwrap().unwrap();
        assert_eq!((caller.role, caller.name.as_str()), (Role::Publisher, "ci"));
        assert_eq!(tokens.authenticate("aqt_nope").unwrap(), None);
        assert_eq!(tokens.authenticate("Bearer x").unwrap(), None);
        assert_eq!(tokens.list().unwrap(), vec![info.clone()]);
        assert!(matches!(
            tokens.create("bad name", Role::Viewer, now),
            Err(TokenError::BadName(_))
        ));
        tokens.revoke(&info.id).unwrap();
        assert_eq!(tokens.authenticate(&secret).unwrap(), None);
        assert!(matches!(
            tokens.revoke(&info.id),
            Err(TokenError::NotFound(_))
        ));
    }
}
