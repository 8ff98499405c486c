//! Scans that step over damaged records. A record whose value cannot be decoded but whose
//! key can is reported with its key, and the scan goes on after it: one damaged record
//! must not hide the others (or stop every instance at start-up).

use durable_store::Error;

/// What a tolerant scan read.
pub(crate) struct Scanned<T, K> {
    /// The records that decoded, in key order.
    pub(crate) records: Vec<T>,
    /// The keys of the damaged records, with their errors.
    pub(crate) damaged: Vec<(K, Error)>,
    /// The last key read (record or damaged): the next page starts after it.
    pub(crate) last: Option<K>,
}

impl<T, K> Scanned<T, K> {
    /// Whether the page was full: more may follow `last`.
    pub(crate) fn is_full(&self, limit: usize) -> bool {
        self.records.len() + self.damaged.len() >= limit
    }
}

/// Reads up to `limit` records after `after` with `scan`. When the page holds a damaged
/// record (`damaged_key` gives the key an error names), reads one record at a time past
/// it, so the records around it are still returned.
pub(crate) fn scan_tolerant<T, K: Clone>(
    after: Option<K>,
    limit: usize,
    scan: impl Fn(Option<&K>, usize) -> Result<Vec<T>, Error>,
    key_of: impl Fn(&T) -> K,
    damaged_key: impl Fn(&Error) -> Option<K>,
) -> Result<Scanned<T, K>, Error> {
    match scan(after.as_ref(), limit) {
        Ok(records) => {
            let last = records.last().map(&key_of);
            return Ok(Scanned {
                records,
                damaged: Vec::new(),
                last,
            });
        }
        Err(error) if damaged_key(&error).is_some() => {}
        Err(error) => return Err(error),
    }
    let mut scanned = Scanned {
        records: Vec::new(),
        damaged: Vec::new(),
        last: None,
    };
    let mut after = after;
    while !scanned.is_full(limit) {
        match scan(after.as_ref(), 1) {
            Ok(mut one) => match one.pop() {
                Some(record) => {
                    after = Some(key_of(&record));
                    scanned.records.push(record);
                }
                None => break,
            },
            Err(error) => match damaged_key(&error) {
                Some(key) => {
                    after = Some(key.clone());
                    scanned.damaged.push((key, error));
                }
                None => return Err(error),
            },
        }
    }
    scanned.last = after;
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan over numbers where the odd multiples of 5 are damaged.
    fn scan(after: Option<&u32>, limit: usize) -> Result<Vec<u32>, Error> {
        let mut page = Vec::new();
        for n in after.map_or(0, |after| after + 1)..30 {
            if page.len() == limit {
                break;
            }
            if n % 10 == 5 {
                return Err(Error::Backend(format!("damaged {n}")));
            }
            page.push(n);
        }
        Ok(page)
    }

    fn damaged(error: &Error) -> Option<u32> {
        match error {
            Error::Backend(text) => text.strip_prefix("damaged ")?.parse().ok(),
            _ => None,
        }
    }

    #[test]
    fn pages_step_over_damaged_records_and_keep_the_rest() {
        let mut after = None;
        let mut records = Vec::new();
        let mut damaged_keys = Vec::new();
        loop {
            let page = scan_tolerant(after, 4, scan, |n| *n, damaged).unwrap();
            records.extend(page.records.iter().copied());
            damaged_keys.extend(page.damaged.iter().map(|(key, _)| *key));
            if !page.is_full(4) {
                break;
            }
            after = page.last;
        }
        assert_eq!(damaged_keys, vec![5, 15, 25]);
        let expected: Vec<u32> = (0..30).filter(|n| n % 10 != 5).collect();
        assert_eq!(records, expected);
    }

    #[test]
    fn other_errors_stop_the_scan() {
        let failing = |_: Option<&u32>, _: usize| -> Result<Vec<u32>, Error> {
            Err(Error::Backend("disk on fire".into()))
        };
        assert!(scan_tolerant(None, 4, failing, |n| *n, damaged).is_err());
    }
}
