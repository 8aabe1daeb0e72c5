//! Pages bounded by bytes as well as by count.
//!
//! A list answer is bounded by its `limit`, but items vary in size: 1000 events of 256 KB
//! are 250 MB. Where the answer must fit a fixed size (a Lambda function's synchronous
//! answer: 6 MB), a page also stops at a byte budget, and the usual continuation (cursor,
//! next offset) carries the client to the rest. [`PageBudget`] decides which items a page
//! takes; [`wire_len`] measures an item as it travels.
//!
//! An HTTP function's JSON body travels as a JSON *string* inside the runtime's answer
//! (API Gateway's payload 2.0 response), so it is escaped twice: every `"` and `\` of the
//! body doubles there. [`wire_len`] counts exactly that, so a budget in wire bytes holds
//! whatever the items contain (an item of quotes costs twice its body bytes, and is counted
//! so).

use serde::Serialize;
use std::io;

/// The bytes `value` takes once serialized as JSON and that JSON serialized again as a JSON
/// string (without the string's two quotes): the body length plus one for each `"` and `\`
/// in it. serde_json writes no raw control character (they are `\n`, `\u0001`, ... whose
/// backslash is counted) and writes non-ASCII characters as they are (in both passes), so
/// nothing else changes length. `usize::MAX` when `value` cannot be serialized (such a
/// value cannot be answered either).
pub fn wire_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut counter = WireCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX,
    }
}

/// Counts bytes as [`wire_len`] defines them, storing nothing.
struct WireCounter(usize);

impl io::Write for WireCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let doubled = buf.iter().filter(|b| matches!(b, b'"' | b'\\')).count();
        self.0 = self.0.saturating_add(buf.len() + doubled);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The byte budget of one page: items are admitted in page order until the next one would
/// pass the budget; that item and everything after it go to the next page. The first item
/// is always admitted, so a page is never empty while items remain: whoever sets the budget
/// must make it larger than any single item can be (the write side's limits bound that), or
/// the answer may still pass its size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBudget {
    limit: usize,
    used: usize,
    items: usize,
}

impl PageBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            items: 0,
        }
    }

    /// Admits an item of `size` bytes (plus one for the separating comma) when it fits, or
    /// when it would be the page's first; `false`: the page ends before it.
    pub fn admit(&mut self, size: usize) -> bool {
        let cost = size.saturating_add(1);
        let after = self.used.saturating_add(cost);
        if self.items > 0 && after > self.limit {
            return false;
        }
        self.used = after;
        self.items += 1;
        true
    }

    /// [`admit`](Self::admit) with the item's [`wire_len`].
    pub fn admit_item<T: Serialize + ?Sized>(&mut self, item: &T) -> bool {
        self.admit(wire_len(item))
    }

    /// Bytes admitted so far (items and separators).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Items admitted so far.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The budget.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// How many of `items`, in order, one page of `limit` bytes takes (at least one when there
/// is any): the prefix a [`PageBudget`] admits.
pub fn fitting<T: Serialize>(items: &[T], limit: usize) -> usize {
    let mut budget = PageBudget::new(limit);
    items
        .iter()
        .take_while(|item| budget.admit_item(*item))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The size of `v` as the runtime writes it: the body serialized, then serialized again
    /// as a string, less that string's quotes.
    fn twice(v: &serde_json::Value) -> usize {
        let body = serde_json::to_string(v).expect("json");
        serde_json::to_string(&body).expect("json").len() - 2
    }

    #[test]
    fn wire_len_is_the_body_escaped_again_as_a_string() {
        let values = [
            json!(null),
            json!("plain"),
            json!({"q": "\"quoted\" and \\ back", "n": [1, 2.5, -3]}),
            json!("control \u{1} \u{1f} \n \t \r and non-ASCII é€😀"),
            json!({"\"key\"": {"nested": ["\\\\", "\"\""]}}),
            json!("\"".repeat(1000)),
        ];
        for v in &values {
            assert_eq!(wire_len(v), twice(v), "{v}");
        }
        // A string of quotes: each is `\"` in the body and `\\\"` on the wire.
        assert_eq!(wire_len(&"\"".repeat(1000)), 2 * (2 + 2 * 1000));
    }

    #[test]
    fn a_budget_admits_until_the_next_item_would_pass_it() {
        let mut budget = PageBudget::new(100);
        assert!(budget.admit(49)); // 50 with its comma
        assert!(budget.admit(49)); // 100: exactly the budget
        assert!(!budget.admit(0), "one more byte would pass it");
        assert_eq!(
            (budget.used(), budget.items(), budget.limit()),
            (100, 2, 100)
        );
        // Refusing admits nothing.
        assert!(!budget.admit(1000));
        assert_eq!(budget.used(), 100);
    }

    #[test]
    fn the_first_item_is_always_admitted() {
        let mut budget = PageBudget::new(10);
        assert!(budget.admit(1_000_000), "a page is never empty");
        assert!(!budget.admit(0));
        assert_eq!(fitting(&["x".repeat(50)], 10), 1);
        assert_eq!(fitting::<String>(&[], 10), 0);
    }

    #[test]
    fn fitting_counts_the_prefix_a_page_takes_in_wire_bytes() {
        // `"aaaa"` is 6 body bytes, 8 on the wire (its quotes double), 9 with its comma.
        let items = vec!["aaaa".to_owned(); 10];
        assert_eq!(fitting(&items, 90), 10);
        assert_eq!(fitting(&items, 89), 9);
        assert_eq!(fitting(&items, 9), 1);
        // `"\"\""` is 6 body bytes, all doubled: 12 on the wire, 13 with its comma.
        let quotes = vec!["\"\"".to_owned(); 10];
        assert_eq!(fitting(&quotes, 65), 5);
        assert_eq!(fitting(&quotes, 64), 4);
        assert_eq!(fitting(&items, usize::MAX), 10);
    }
}
