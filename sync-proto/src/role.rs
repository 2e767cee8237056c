//! Token roles and what each may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role a token carries. `Admin` can do everything a `Publisher` can, which can do
/// everything a `Viewer` can. `Device` is apart: it reads packs and chunks and reports its own
/// state, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Publisher,
    Viewer,
    Device,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, the OpenAPI document).
    Public,
    /// Read packs and chunks: viewers and up, and devices.
    Read,
    /// Read fleet state (devices, rollouts): viewers and up, not devices.
    View,
    /// Upload packs, move tags: publishers and admins.
    Publish,
    /// Delete packs, manage tokens: admins only.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Publisher, Role::Viewer, Role::Device];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Viewer => "viewer",
            Role::Device => "device",
        }
    }

    /// Whether a token with this role may use a route that needs `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Public => true,
            Access::Read => true,
            Access::View => matches!(self, Role::Admin | Role::Publisher | Role::Viewer),
            Access::Publish => matches!(self, Role::Admin | Role::Publisher),
            Access::Admin => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected admin, publisher, viewer or device")
            })
    }
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Read => "read",
            Access::View => "view",
            Access::Publish => "publish",
            Access::Admin => "admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_devices_are_apart() {
        let table = [
            (Access::Read, [true, true, true, true]),
            (Access::View, [true, true, true, false]),
            (Access::Publish, [true, true, false, false]),
            (Access::Admin, [true, false, false, false]),
        ];
        for (access, expected) in table {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(role.allows(access), want, "{role} on {access:?}");
            }
        }
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
