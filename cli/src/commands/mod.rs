//! What each command does: the calls to the coordinators, the download of a backup, `dev`'s
//! local region. A command takes its parsed arguments (`grammar/`) and prints through a view
//! (`views/`); it never parses the command line and never builds JSON by hand.

pub mod audit;
pub mod backup;
pub mod cluster;
pub mod dev;
pub mod keygen;
pub mod pages;
pub mod pki;
pub mod policy;
pub mod restore;
pub mod service;
