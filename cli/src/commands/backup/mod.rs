//! `strongbox backup create|list|show|download|restore|hold|unhold|purge`: the backups of a
//! service, with what retention says of each (kept because, expires, held, locked).
//! `download` is [`download`], the names and load commands it plans [`plan`].
//!
//! Invariants: `list` and `show` are read-only (a viewer certificate is enough); a manifest
//! is opened only here, in the CLI, with the fleet key the operator gives (`--key-file`), and
//! only once it names the backup and service the catalog does.

pub mod download;
pub mod plan;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use strongbox_core::keys::Keyring;
use strongbox_core::manifest::{self, Manifest};
use strongbox_proto::v1::{
    BackupInfo, BackupState, CreateBackupRequest, DownloadChunkRequest, HoldBackupRequest, JobInfo,
    JobState, ListBackupsRequest, PurgeBackupRequest, RestoreBackupRequest, ShowBackupRequest,
};
use tonic::codegen::Bytes;

use crate::commands::pages::{print_list, Fetched, Walked};
use crate::commands::restore;
use crate::connect::Api;
use crate::grammar::backup::Command;
use crate::grammar::ConnectArgs;
use crate::output::{Fields, Output};
use crate::views::backup::{self as view, BackupJobView, BackupShowView, BackupView, PurgedView};
use crate::views::job::JobView;
use crate::views::manifest::ManifestView;

/// Prints one backup like `backup show` (without its manifest).
pub fn print_backup(b: &BackupInfo, output: Output) {
    let v = BackupView::from(b);
    match output {
        Output::Json => output.json(&v),
        Output::Table => v.fields(strongbox_core::clock::now_ms()).print(),
    }
}

/// Waits for a backup job (progress on stderr) and fetches the backup it made, if any.
pub async fn wait_backup_job(
    api: &Api,
    job: &JobInfo,
    output: Output,
    timeout: Duration,
) -> anyhow::Result<(JobInfo, Option<BackupInfo>)> {
    let done = restore::wait_job(api, &job.id, output, timeout).await?;
    let backup = if done.backup_id.is_empty() {
        None
    } else {
        show_backup(api, &done.backup_id).await.ok()
    };
    Ok((done, backup))
}

/// The key/value lines of a finished backup job: the backup's, or the job's when there is none.
pub fn print_backup_job_fields(done: &JobInfo, backup: Option<&BackupInfo>) {
    match backup {
        Some(b) => BackupView::from(b)
            .fields(strongbox_core::clock::now_ms())
            .print(),
        None => JobView::from(done).fields().print(),
    }
}

/// An error if the backup job failed, saying where to look and how to retry.
pub fn check_backup_job(done: &JobInfo) -> anyhow::Result<()> {
    if done.state() == JobState::Failed {
        bail!(
            "backup job {} failed: {} (see the agent's log on {}; retry with `strongbox backup create {}`)",
            done.id,
            if done.reason.is_empty() { "no reason given" } else { &done.reason },
            done.host,
            done.service
        );
    }
    Ok(())
}

pub async fn show_backup(api: &Api, id: &str) -> anyhow::Result<BackupInfo> {
    api.call("ShowBackup", |mut c| {
        let id = id.to_string();
        async move { c.show_backup(ShowBackupRequest { id }).await }
    })
    .await
}

/// Holds (or unholds) a backup; the answer is the backup with its retention as of now.
async fn hold(api: &Api, id: &str, held: bool, reason: String) -> anyhow::Result<BackupInfo> {
    api.call("HoldBackup", |mut c| {
        let req = HoldBackupRequest {
            backup_id: id.to_string(),
            held,
            reason: reason.clone(),
        };
        async move { c.hold_backup(req).await }
    })
    .await
}

/// Prints the backups of `service` (every service when empty), newest first, page by page:
/// `wanted` of them (all when `None`). How many it printed and whether more exist.
pub async fn print_backups(
    api: &Api,
    service: &str,
    wanted: Option<usize>,
    output: Output,
) -> anyhow::Result<Walked> {
    let now = strongbox_core::clock::now_ms();
    let empty = if service.is_empty() {
        "No backups yet. Take one with `strongbox backup create SERVICE`.".to_string()
    } else {
        format!("No backups of {service} yet. Take one with `strongbox backup create {service}`.")
    };
    print_list(
        output,
        wanted,
        |page| async move {
            let r = api
                .call("ListBackups", |mut c| {
                    let req = ListBackupsRequest {
                        service: service.to_string(),
                        page: Some(page.clone()),
                    };
                    async move { c.list_backups(req).await }
                })
                .await?;
            Ok(Fetched {
                items: r.backups,
                next: r.next_page_token,
            })
        },
        |printer, backups| {
            let views: Vec<BackupView<'_>> = backups.iter().map(BackupView::from).collect();
            printer.page(&views, |v| view::table(v, now));
        },
        &empty,
        "backups, newest first",
    )
    .await
}

/// Fetches one sealed chunk (or the manifest) of backup `backup`.
async fn fetch_sealed(api: &Api, backup: &str, id: &[u8]) -> anyhow::Result<Bytes> {
    Ok(api
        .call("DownloadChunk", |mut c| {
            let req = DownloadChunkRequest {
                backup_id: backup.to_string(),
                id: Bytes::copy_from_slice(id),
            };
            async move { c.download_chunk(req).await }
        })
        .await?
        .sealed)
}

/// Fetches and opens a backup's manifest with the keyring (the CPU work on the blocking pool).
pub async fn open_manifest(
    api: &Api,
    info: &BackupInfo,
    keyring: Arc<Keyring>,
    key_file: &Path,
) -> anyhow::Result<Manifest> {
    if info.manifest_id.is_empty() {
        bail!(
            "backup {} has no manifest (it is {}): only completed backups can be opened",
            info.id,
            info.state()
        );
    }
    let sealed = fetch_sealed(api, &info.id, &info.manifest_id)
        .await
        .with_context(|| format!("fetching the manifest of backup {}", info.id))?;
    let service = info.service.clone();
    let m = tokio::task::spawn_blocking(move || manifest::open(&keyring, &service, &sealed))
        .await
        .context("the manifest check stopped")?
        .with_context(|| {
            format!(
                "the key file {} does not open backup {} of service {}: use the fleet keyring the backup was sealed with (nothing was written)",
                key_file.display(),
                info.id,
                info.service
            )
        })?;
    if m.service != info.service || (!m.backup_id.is_empty() && m.backup_id != info.id) {
        bail!(
            "the manifest names backup {} of service {}, but the catalog says backup {} of {}: refusing it",
            m.backup_id,
            m.service,
            info.id,
            info.service
        );
    }
    Ok(m)
}

fn load_keyring(path: &Path) -> anyhow::Result<Arc<Keyring>> {
    Keyring::load(path)
        .map(Arc::new)
        .with_context(|| format!("loading the fleet keyring {}", path.display()))
}

pub async fn run(cmd: Command, conn: &ConnectArgs, output: Output) -> anyhow::Result<()> {
    let api = Api::new(conn)?;
    match cmd {
        Command::Create {
            service,
            host,
            wait,
            timeout,
        } => {
            let job = api
                .call("CreateBackup", |mut c| {
                    let req = CreateBackupRequest {
                        service: service.clone(),
                        host: host.clone().unwrap_or_default(),
                    };
                    async move { c.create_backup(req).await }
                })
                .await?;
            if !wait {
                match output {
                    Output::Json => output.json(&BackupJobView {
                        job: JobView::from(&job),
                        backup: None,
                    }),
                    Output::Table => {
                        let mut f = Fields::default();
                        f.push("job", job.id.as_str());
                        f.push("backup", job.backup_id.as_str());
                        f.push("service", job.service.as_str());
                        f.push("host", job.host.as_str());
                        f.push("state", job.state().to_string());
                        f.print();
                        println!(
                            "\nFollow it with `strongbox backup show {}` or `strongbox backup list {}`.",
                            job.backup_id, job.service
                        );
                    }
                }
                return Ok(());
            }
            output.note(&format!(
                "backup job {} (backup {}) of {} on {}",
                job.id, job.backup_id, job.service, job.host
            ));
            let (done, backup) =
                wait_backup_job(&api, &job, output, Duration::from_secs(timeout)).await?;
            match output {
                Output::Json => output.json(&BackupJobView {
                    job: JobView::from(&done),
                    backup: backup.as_ref().map(BackupView::from),
                }),
                Output::Table => print_backup_job_fields(&done, backup.as_ref()),
            }
            check_backup_job(&done)?;
        }
        Command::List { service, page } => {
            let service = service.unwrap_or_default();
            if !service.is_empty() {
                crate::commands::service::check_known(&api, &service).await?;
            }
            print_backups(&api, &service, page.wanted(output == Output::Json), output).await?;
        }
        Command::Show { id, key_file } => {
            let info = show_backup(&api, &id).await?;
            // A backup that did not complete has no manifest: its record is what there is to
            // see (why it failed), key file or not.
            let m = match &key_file {
                Some(k) if info.state() == BackupState::Completed => {
                    Some(open_manifest(&api, &info, load_keyring(k)?, k).await?)
                }
                _ => None,
            };
            let show = BackupShowView {
                backup: BackupView::from(&info),
                manifest: m.as_ref().map(ManifestView::from),
            };
            match output {
                Output::Json => output.json(&show),
                Output::Table => {
                    let mut f = show.backup.fields(strongbox_core::clock::now_ms());
                    if let Some(m) = &show.manifest {
                        f.extend(m.fields());
                    }
                    f.print();
                    if let Some(m) = &show.manifest {
                        m.print_contents();
                    } else if info.state() == BackupState::Completed {
                        println!("\nPass --key-file to see its engine, parts and row counts.");
                    }
                }
            }
        }
        Command::Download {
            id,
            key_file,
            out,
            format,
            force,
            parallel,
        } => {
            download::download(
                &api,
                &id,
                &key_file,
                out,
                format,
                force,
                parallel as usize,
                output,
            )
            .await?;
        }
        Command::Restore {
            id,
            to_host,
            to_region,
            in_place,
            yes,
            wait,
            timeout,
        } => {
            let job = api
                .call("RestoreBackup", |mut c| {
                    let req = RestoreBackupRequest {
                        backup_id: id.clone(),
                        to_host: to_host.clone().unwrap_or_default(),
                        to_region: to_region.clone().unwrap_or_default(),
                        in_place,
                        yes,
                    };
                    async move { c.restore_backup(req).await }
                })
                .await?;
            if !wait {
                match output {
                    Output::Json => output.json(&JobView::from(&job)),
                    Output::Table => {
                        let mut f = Fields::default();
                        f.push("job", job.id.as_str());
                        f.push("backup", job.backup_id.as_str());
                        f.push("target host", job.host.as_str());
                        f.push("in place", job.in_place.to_string());
                        f.push("state", job.state().to_string());
                        f.print();
                        if !job.after_job.is_empty() {
                            println!(
                                "\nIt starts once the pre-restore backup (job {}) completes.",
                                job.after_job
                            );
                        }
                        println!(
                            "\nFollow it with `strongbox restore show {}` (or pass --wait).",
                            job.id
                        );
                    }
                }
                return Ok(());
            }
            output.note(&format!(
                "restore job {} of backup {id} onto {}",
                job.id,
                if job.host.is_empty() {
                    "a spare"
                } else {
                    &job.host
                }
            ));
            let done =
                restore::wait_job(&api, &job.id, output, Duration::from_secs(timeout)).await?;
            restore::report_restore(&done, output)?;
        }
        Command::Purge { id, yes } => {
            if !yes {
                bail!(
                    "purging deletes backup {id} for good (its chunks go once no other backup uses them); run `strongbox backup purge {id} --yes` to confirm"
                );
            }
            let purged = api
                .call_status("PurgeBackup", |mut c| {
                    let backup_id = id.clone();
                    async move { c.purge_backup(PurgeBackupRequest { backup_id }).await }
                })
                .await;
            match purged {
                Ok(_) => {}
                // Held or locked: the coordinators' sentence says why and what to do, as is.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    bail!("{}", s.message())
                }
                Err(s) => {
                    return Err(crate::connect::status_error(s)
                        .context(crate::connect::doing("PurgeBackup")))
                }
            }
            output.record(&PurgedView { purged: &id });
        }
        Command::Hold { id, reason } => {
            let b = hold(&api, &id, true, reason.unwrap_or_default()).await?;
            print_backup(&b, output);
        }
        Command::Unhold { id } => {
            let b = hold(&api, &id, false, String::new()).await?;
            print_backup(&b, output);
        }
    }
    Ok(())
}
