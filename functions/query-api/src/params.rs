//! How each view is queried over HTTP: the query parameter naming one document (a lookup) or
//! an index partition (a required list filter), the format its value must have, and the
//! field under which a document's key is shown when the document lacks it.
//!
//! Which views exist is the shop's (`shop::registry::VIEWS`); their query parameters are this
//! API's. [`QUERIES`] has exactly one row per registered view (a test keeps them equal).

use shop::views;

/// What a query parameter's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamFormat {
    /// An id: 1 to 128 of `A-Z a-z 0-9 _ . : -` (the id rule of stream ids,
    /// [`eventfold::envelope::valid_id`], which every id the shop stores keeps).
    Id,
    /// A calendar day, exactly `YYYY-MM-DD` ([`views::parse_day`]).
    Day,
}

impl ParamFormat {
    /// Whether `value` has this format.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            Self::Id => eventfold::envelope::valid_id(value),
            Self::Day => views::parse_day(value).is_some(),
        }
    }
}

/// A query parameter of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the query string.
    pub name: &'static str,
    /// What its value must look like.
    pub format: ParamFormat,
}

/// How one view is queried (`GET /queries/{view}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewQuery {
    /// The view's name (a name of `shop::registry::VIEWS`).
    pub view: &'static str,
    /// The parameter naming one document (a lookup), if the view has lookups.
    pub key: Option<Param>,
    /// The parameter naming an index partition (a required list filter), if the view is an
    /// index.
    pub partition: Option<Param>,
    /// The field under which a document's key is shown when the document lacks it.
    pub key_field: &'static str,
}

const fn id(name: &'static str) -> Option<Param> {
    Some(Param {
        name,
        format: ParamFormat::Id,
    })
}

/// The query parameters of every view, in `shop::registry::VIEWS` order.
pub const QUERIES: &[ViewQuery] = &[
    ViewQuery {
        view: views::ORDER_SUMMARY,
        key: id("order_id"),
        partition: None,
        key_field: "order_id",
    },
    ViewQuery {
        view: views::ORDERS_BY_CUSTOMER,
        key: None,
        partition: id("customer_id"),
        key_field: "order_id",
    },
    ViewQuery {
        view: views::STOCK_LEVELS,
        key: id("sku"),
        partition: None,
        key_field: "sku",
    },
    ViewQuery {
        view: views::DAILY_SALES,
        key: Some(Param {
            name: "day",
            format: ParamFormat::Day,
        }),
        partition: None,
        key_field: "day",
    },
    ViewQuery {
        view: views::CUSTOMERS,
        key: id("customer_id"),
        partition: None,
        key_field: "customer_id",
    },
];

/// How the view named `view` is queried.
pub fn query(view: &str) -> Option<&'static ViewQuery> {
    QUERIES.iter().find(|q| q.view == view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop::registry;

    #[test]
    fn every_registered_view_has_its_parameters_and_no_other_view_has() {
        let queried: Vec<&str> = QUERIES.iter().map(|q| q.view).collect();
        let registered: Vec<&str> = registry::VIEWS.iter().map(|v| v.name).collect();
        assert_eq!(queried, registered);
        for q in QUERIES {
            assert!(
                q.key.is_some() != q.partition.is_some(),
                "{}: a lookup or an index, not both",
                q.view
            );
        }
    }

    #[test]
    fn each_view_has_its_query_shape() {
        let by_customer = query(views::ORDERS_BY_CUSTOMER).expect("queried");
        assert_eq!(by_customer.key, None);
        assert_eq!(by_customer.partition.map(|p| p.name), Some("customer_id"));
        assert_eq!(by_customer.key_field, "order_id");
        let sales = query(views::DAILY_SALES).expect("queried");
        assert_eq!(
            sales.key.map(|p| (p.name, p.format)),
            Some(("day", ParamFormat::Day))
        );
        let stock = query(views::STOCK_LEVELS).expect("queried");
        assert_eq!(
            stock.key.map(|p| (p.name, p.format)),
            Some(("sku", ParamFormat::Id))
        );
        assert!(query("order_summary").is_none());
        assert!(query("").is_none());
    }

    /// The day rule itself is `views::parse_day`'s, tested with every case in shop
    /// (`days_are_real_calendar_dates_written_exactly`); here, that the format uses it.
    #[test]
    fn days_are_the_shops_calendar_days() {
        assert!(ParamFormat::Day.accepts("2024-02-29"));
        for not_a_day in ["2024-02-31", "2024-1-05", "yesterday", ""] {
            assert!(!ParamFormat::Day.accepts(not_a_day), "{not_a_day:?}");
        }
    }

    #[test]
    fn ids_are_short_and_plain() {
        for id in ["o-1", "sku.2:a_b", &"x".repeat(128)] {
            assert!(ParamFormat::Id.accepts(id), "{id}");
        }
        for not_an_id in ["", "bad id", "a/b", "ü", &"x".repeat(129)] {
            assert!(!ParamFormat::Id.accepts(not_an_id), "{not_an_id:?}");
        }
    }
}
