//! Random sequences of registry operations checked against a simple in-memory model.

use std::collections::BTreeMap;

use aq_store::{ErrorKind, Registry};
use proptest::prelude::*;

use crate::support::*;

#[derive(Debug, Clone)]
enum Op {
    Save { name: u8, minor: u8, seed: u8 },
    Remove { name: u8, minor: u8 },
    Tag { name: u8, minor: u8 },
    Gc,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..2, 0u8..3, 0u8..3).prop_map(|(name, minor, seed)| Op::Save { name, minor, seed }),
        2 => (0u8..2, 0u8..3).prop_map(|(name, minor)| Op::Remove { name, minor }),
        1 => (0u8..2, 0u8..3).prop_map(|(name, minor)| Op::Tag { name, minor }),
        1 => Just(Op::Gc),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn registry_matches_model(ops in proptest::collection::vec(op(), 1..14)) {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::open(dir.path()).unwrap();
        // model: "name:version" -> seed
        let mut model: BTreeMap<String, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Save { name, minor, seed } => {
                    let id = format!("p{name}:1.{minor}.0");
                    let data = bytes(40_000 + seed as usize * 1000, seed as u64);
                    let res = save(&reg, &format!("p{name}"), &format!("1.{minor}.0"), &data);
                    match model.entry(id) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert_eq!(res.unwrap_err().kind(), ErrorKind::Conflict);
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            res.unwrap();
                            slot.insert(seed);
                        }
                    }
                }
                Op::Remove { name, minor } => {
                    let id = format!("p{name}:1.{minor}.0");
                    let res = reg.remove(&id.parse().unwrap());
                    if model.remove(&id).is_some() { res.unwrap(); } else { prop_assert_eq!(res.unwrap_err().kind(), ErrorKind::NotFound); }
                }
                Op::Tag { name, minor } => {
                    let id = format!("p{name}:1.{minor}.0");
                    let res = reg.tag(&id.parse().unwrap(), "stable");
                    prop_assert_eq!(res.is_ok(), model.contains_key(&id));
                }
                Op::Gc => { reg.gc().unwrap(); }
            }
            let snap = reg.snapshot().unwrap();
            let (packs, tags) = (snap.packs, snap.tags);
            prop_assert_eq!(packs.keys().cloned().collect::<Vec<_>>(), model.keys().cloned().collect::<Vec<_>>());
            // `latest` always points at the newest version present.
            for name in ["p0", "p1"] {
                let newest = model.keys().filter(|k| k.starts_with(&format!("{name}:"))).map(|k| semver::Version::parse(k.split_once(':').unwrap().1).unwrap()).max();
                let latest = tags.get(&format!("{name}:latest")).map(|v| semver::Version::parse(v).unwrap());
                if newest.is_some() { prop_assert!(latest.is_some()); }
                if let Some(l) = &latest { let id = format!("{name}:{l}"); prop_assert!(model.contains_key(&id)); }
            }
        }
        reg.gc().unwrap();
        verify_all(&reg);
    }
}
