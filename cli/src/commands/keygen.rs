//! `strongbox keygen`: make the fleet keyring, or add a key to it for rotation.
//!
//! Invariant: an existing key file is never replaced without `--force` (losing a fleet key
//! makes every backup sealed under it unreadable); the file is written 0600, atomically.

use crate::grammar::keygen::*;

use anyhow::{bail, Context};
use strongbox_core::files::Overwrite;
use strongbox_core::keys::Keyring;

use crate::output::Output;
use crate::views::keys::KeyringView;

pub fn run(args: Args, output: Output) -> anyhow::Result<()> {
    let (ring, id) = if args.rotate {
        let mut ring =
            Keyring::load(&args.out).context("--rotate adds a key to an existing keyring")?;
        let id = ring.rotate()?;
        ring.save(&args.out, Overwrite::Replace)?;
        (ring, id)
    } else {
        if args.out.exists() && !args.force {
            bail!(
                "{} already exists. Pass --rotate to add a new key to it, or --force to replace it \
                 (every backup sealed under its keys would become unreadable)",
                args.out.display()
            );
        }
        let mut ring = Keyring::default();
        let id = ring.rotate()?;
        let overwrite = if args.force {
            Overwrite::Replace
        } else {
            Overwrite::Refuse
        };
        ring.save(&args.out, overwrite)?;
        (ring, id)
    };
    output.record(&KeyringView {
        path: args.out.display().to_string(),
        new_key_id: id,
        key_ids: ring.ids().collect(),
        mode: "0600",
    });
    if output == Output::Table {
        eprintln!("Keep this file secret and backed up (e.g. Ansible Vault): without it no backup can be restored.");
    }
    Ok(())
}
