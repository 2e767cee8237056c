//! Skeleton of the sync-server crate. Nothing is implemented yet: the central registry, fleet
//! enrollment and staged rollouts arrive with their own issue. This crate exports no API.
