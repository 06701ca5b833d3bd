//! Backups and restores end to end, with real coordinators, agents and database servers: every
//! engine onto a spare, in place, the servers restores leave behind, and the privacy of every
//! file strongbox writes on the way.

mod engines;
mod in_place;
mod json_documents;
mod operator_errors;
mod pages;
mod private_files;
mod restored_servers;
