//! Token roles and what each may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role a token carries. `Admin` can do everything a `Publisher` can, which can do
/// everything a `Viewer` can. `Device` is apart: it reads packs and chunks and reports its own
/// state, and nothing else. `Enroller` is apart too: it registers devices (each proving it
/// holds its key) and can do nothing else, not even read packs, so the token baked into a
/// factory image is worth little to whoever extracts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Publisher,
    Viewer,
    Device,
    Enroller,
}

/// What a route needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, the OpenAPI document).
    Public,
    /// Read packs and chunks: viewers and up, and devices (not enrollers).
    Read,
    /// Read fleet state (devices, rollouts): viewers and up, not devices.
    View,
    /// Upload packs, move tags: publishers and admins.
    Publish,
    /// Delete packs, manage tokens: admins only.
    Admin,
    /// Register devices: enrollers and admins.
    Enroll,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Publisher,
        Role::Viewer,
        Role::Device,
        Role::Enroller,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::Viewer => "viewer",
            Role::Device => "device",
            Role::Enroller => "enroller",
        }
    }

    /// Whether a token with this role may use a route that needs `access`.
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Public => true,
            Access::Read => self != Role::Enroller,
            Access::View => matches!(self, Role::Admin | Role::Publisher | Role::Viewer),
            Access::Publish => matches!(self, Role::Admin | Role::Publisher),
            Access::Admin => self == Role::Admin,
            Access::Enroll => matches!(self, Role::Admin | Role::Enroller),
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
                format!("unknown role {s:?}: expected admin, publisher, viewer, device or enroller")
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
            Access::Enroll => "enroll",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_devices_and_enrollers_are_apart() {
        // Columns: admin, publisher, viewer, device, enroller.
        let table = [
            (Access::Public, [true, true, true, true, true]),
            (Access::Read, [true, true, true, true, false]),
            (Access::View, [true, true, true, false, false]),
            (Access::Publish, [true, true, false, false, false]),
            (Access::Admin, [true, false, false, false, false]),
            (Access::Enroll, [true, false, false, false, true]),
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
