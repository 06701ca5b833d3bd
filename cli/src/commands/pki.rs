//! `strongbox pki init-ca` and `strongbox pki issue`: the fleet CA and its certificates.
//!
//! Invariant: the CA key is created 0600 and never overwritten; issued keys are 0600.

use crate::grammar::pki::*;

use strongbox_core::files::Overwrite;
use strongbox_core::pki::{self, Identity, Validity};

use crate::output::Output;
use crate::views::keys::{CaView, IssuedView};

pub fn run(cmd: Command, output: Output) -> anyhow::Result<()> {
    match cmd {
        Command::InitCa { dir, name, days } => {
            let (cert, key) = match pki::init_ca_dir(&dir, &name, Validity::days_from_now(days)) {
                Ok(files) => files,
                // No --force here: a new CA would make every certificate of the old one
                // worthless, so replacing it is never one flag away.
                Err(strongbox_core::Error::AlreadyExists { path }) => anyhow::bail!(
                    "{} exists: {} holds a CA already (every certificate of the fleet trusts \
                     it). Use another --dir for a new CA; to replace this one, move its files \
                     away yourself and issue every certificate again",
                    path.display(),
                    dir.display()
                ),
                Err(e) => return Err(e.into()),
            };
            output.record(&CaView {
                ca_cert: cert.display().to_string(),
                ca_key: key.display().to_string(),
                valid_days: days,
            });
        }
        Command::Issue {
            ca_dir,
            role,
            name,
            sans,
            out,
            days,
            force,
        } => {
            let identity = Identity { role, name };
            let overwrite = if force {
                Overwrite::Replace
            } else {
                Overwrite::Refuse
            };
            let files = pki::issue_to_dir(
                &ca_dir,
                &identity,
                &sans,
                Validity::days_from_now(days),
                &out,
                overwrite,
            )?;
            output.record(&IssuedView {
                identity: identity.uri(),
                role: identity.role.as_str(),
                name: &identity.name,
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                ca_cert: files.ca_cert.map(|p| p.display().to_string()),
                sans: &sans,
                valid_days: days,
            });
        }
    }
    Ok(())
}
