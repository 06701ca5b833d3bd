//! Walking a paged list (issue 17, point 4): page after page until the count wanted was shown
//! or the list ended, each page handed on as it arrives, so `--all` streams and never holds
//! the whole list.
//!
//! Invariant: a walk asks for no more than it shows (the last page asks for what is left), and
//! never more than [`PAGE_MAX`] items at once.

use std::future::Future;

use strongbox_proto::v1::PageRequest;

use crate::output::{ListPrinter, Output};

/// The most items one page asks for: the coordinators' bound (`api::validate::PAGE_MAX`).
pub const PAGE_MAX: usize = 1_000;

/// One page as a list RPC returned it: its items, and the token of the next page (empty:
/// this was the last).
pub struct Fetched<T> {
    pub items: Vec<T>,
    pub next: String,
}

/// What a walk showed: how many items, and whether the list holds more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walked {
    pub shown: usize,
    pub more: bool,
}

/// Fetches pages with `fetch` until `wanted` items (all when `None`) were given to `each`,
/// one page at a time.
pub async fn walk<T, F, Fut>(
    wanted: Option<usize>,
    mut fetch: F,
    mut each: impl FnMut(Vec<T>) -> anyhow::Result<()>,
) -> anyhow::Result<Walked>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = anyhow::Result<Fetched<T>>>,
{
    let mut token = String::new();
    let mut shown = 0usize;
    loop {
        let limit = wanted.map_or(PAGE_MAX, |n| n.saturating_sub(shown).min(PAGE_MAX));
        let page = fetch(PageRequest {
            limit: limit as u32,
            token: std::mem::take(&mut token),
        })
        .await?;
        shown += page.items.len();
        each(page.items)?;
        let more = !page.next.is_empty();
        if !more || wanted.is_some_and(|n| shown >= n) {
            return Ok(Walked { shown, more });
        }
        token = page.next;
    }
}

/// Prints a list page by page as [`walk`] fetches it: `page` gives each page's items to the
/// printer (as views), `empty` is what people see when there is none, `what` names the items
/// for [`say_more`].
pub async fn print_list<T, F, Fut>(
    output: Output,
    wanted: Option<usize>,
    fetch: F,
    mut page: impl FnMut(&mut ListPrinter, Vec<T>),
    empty: &str,
    what: &str,
) -> anyhow::Result<Walked>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: Future<Output = anyhow::Result<Fetched<T>>>,
{
    let mut printer = ListPrinter::new(output);
    let walked = walk(wanted, fetch, |items| {
        page(&mut printer, items);
        Ok(())
    })
    .await?;
    printer.end();
    if output == Output::Table && walked.shown == 0 {
        println!("{empty}");
    }
    say_more(walked, what);
    Ok(walked)
}

/// Tells people (on stderr, in both output modes: it never mixes with the JSON on stdout)
/// that the list holds more than `walked` showed, and how to see more. `what` names the
/// items in order: "backups, newest first", "services".
fn say_more(walked: Walked, what: &str) {
    if walked.more {
        eprintln!(
            "(showing {} {what}; more with --limit N, or --all for every one)",
            walked.shown
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list of `n` numbers served in pages of at most `max`, recording what each page asked.
    async fn served(n: usize, wanted: Option<usize>, max: usize) -> (Vec<usize>, Walked, Vec<u32>) {
        let asked = std::cell::RefCell::new(Vec::new());
        let mut seen = Vec::new();
        let walked = walk(
            wanted,
            |p: PageRequest| {
                asked.borrow_mut().push(p.limit);
                let from: usize = p.token.parse().unwrap_or(0);
                let to = (from + (p.limit as usize).min(max)).min(n);
                async move {
                    Ok(Fetched {
                        items: (from..to).collect(),
                        next: if to < n {
                            to.to_string()
                        } else {
                            String::new()
                        },
                    })
                }
            },
            |items| {
                seen.extend(items);
                Ok(())
            },
        )
        .await
        .expect("walk");
        (seen, walked, asked.into_inner())
    }

    #[tokio::test]
    async fn a_limit_asks_for_no_more_than_it_shows_and_says_whether_more_exist() {
        let (seen, walked, asked) = served(50, Some(20), PAGE_MAX).await;
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert_eq!(
            walked,
            Walked {
                shown: 20,
                more: true
            }
        );
        assert_eq!(asked, [20]);
        // A server that gives less than asked: the walk goes on for the rest.
        let (seen, walked, asked) = served(50, Some(20), 8).await;
        assert_eq!(seen.len(), 20);
        assert!(walked.more);
        assert_eq!(asked, [20, 12, 4]);
    }

    #[tokio::test]
    async fn all_walks_every_page_of_at_most_the_bound() {
        let (seen, walked, asked) = served(2_500, None, PAGE_MAX).await;
        assert_eq!(seen, (0..2_500).collect::<Vec<_>>());
        assert_eq!(
            walked,
            Walked {
                shown: 2_500,
                more: false
            }
        );
        assert_eq!(asked, [1_000, 1_000, 1_000]);
        let (seen, walked, _) = served(0, None, PAGE_MAX).await;
        assert!(seen.is_empty());
        assert_eq!(
            walked,
            Walked {
                shown: 0,
                more: false
            }
        );
    }
}
