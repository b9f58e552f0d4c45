//! Row formats of public datasets, turned into events of the default tracking plan.
//!
//! Conversions never fail: a value that does not parse is passed on as the text it was, so the
//! tracking plan rejects the event with a precise violation and the row is accounted for.

use serde_json::{json, Map, Value};

/// A column read as text (SQL NULL and empty strings are both "absent").
fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

/// An integer when the text is one, else the text itself (the plan then reports the type).
fn int_or_text(s: &str) -> Value {
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::String(s.to_owned()))
}

fn number_or_text(s: &str) -> Value {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(s.to_owned()),
    }
}

/// `2010-12-01 08:26:00` (the dataset's local time, taken as UTC) → RFC 3339; anything else is
/// passed on unchanged for the plan to reject.
fn naive_to_rfc3339(s: &str) -> String {
    match chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%m/%d/%Y %H:%M"))
    {
        Ok(t) => t
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Err(_) => s.to_owned(),
    }
}

/// Customer ids are sometimes exported as floats (`17850.0`).
fn normalise_customer(s: &str) -> &str {
    s.strip_suffix(".0").unwrap_or(s)
}

/// UCI Online Retail: InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
/// CustomerID, Country. Invoices starting with C are cancellations (a `refund` with a positive
/// quantity); A-invoices are bad-debt adjustments, not shop behaviour (type
/// `bad_debt_adjustment`, which the default plan does not know). Rows without a customer keep
/// no user_id and are rejected for it. The client event id is built from the row's content, so
/// re-importing the file stores nothing twice and exact duplicate rows count as duplicates.
pub fn online_retail_event(row: &[Option<&str>]) -> Value {
    let col = |i: usize| present(row.get(i).copied().flatten());
    let invoice = col(0).unwrap_or("");
    let event_type = if invoice.starts_with('C') {
        "refund"
    } else if invoice.starts_with('A') {
        "bad_debt_adjustment"
    } else {
        "purchase"
    };
    let mut props = Map::new();
    if !invoice.is_empty() {
        props.insert("order_id".into(), json!(invoice));
    }
    if let Some(q) = col(3) {
        let v = match (event_type, q.parse::<i64>()) {
            ("refund", Ok(n)) => json!(-n),
            (_, Ok(n)) => json!(n),
            _ => Value::String(q.to_owned()),
        };
        props.insert("quantity".into(), v);
    }
    if let Some(p) = col(5) {
        props.insert("price".into(), number_or_text(p));
    }
    props.insert("currency".into(), json!("GBP"));
    if let Some(c) = col(7) {
        props.insert("country".into(), json!(c));
    }
    let mut e = Map::new();
    e.insert("type".into(), json!(event_type));
    if let Some(u) = col(6) {
        e.insert("user_id".into(), json!(normalise_customer(u)));
    }
    if let Some(i) = col(1) {
        e.insert("item_id".into(), json!(i));
    }
    if let Some(t) = col(4) {
        e.insert("occurred_at".into(), json!(naive_to_rfc3339(t)));
    }
    e.insert(
        "client_event_id".into(),
        json!(format!(
            "uci:{}:{}:{}:{}:{}",
            invoice,
            col(1).unwrap_or(""),
            col(3).unwrap_or(""),
            col(5).unwrap_or(""),
            col(4).unwrap_or("")
        )),
    );
    e.insert("properties".into(), Value::Object(props));
    Value::Object(e)
}

/// RetailRocket-style rows: timestamp (Unix milliseconds), visitorid, event (view, addtocart,
/// transaction), itemid, and an optional transactionid.
pub fn retailrocket_event(row: &[Option<&str>]) -> Value {
    let col = |i: usize| present(row.get(i).copied().flatten());
    let raw_type = col(2).unwrap_or("");
    let event_type = match raw_type {
        "view" => "view",
        "addtocart" => "add_to_cart",
        "transaction" => "purchase",
        other => other,
    };
    let mut e = Map::new();
    e.insert("type".into(), json!(event_type));
    if let Some(u) = col(1) {
        e.insert("user_id".into(), int_or_text(u));
    }
    if let Some(i) = col(3) {
        e.insert("item_id".into(), int_or_text(i));
    }
    if let Some(ts) = col(0) {
        let when = ts
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
            .unwrap_or_else(|| Value::String(ts.to_owned()));
        e.insert("occurred_at".into(), when);
    }
    let mut props = Map::new();
    if let (Some(tx), "purchase") = (col(4), event_type) {
        props.insert("order_id".into(), json!(tx));
    }
    e.insert("properties".into(), Value::Object(props));
    e.insert(
        "client_event_id".into(),
        json!(format!(
            "rr:{}:{}:{}:{}",
            col(0).unwrap_or(""),
            col(1).unwrap_or(""),
            raw_type,
            col(3).unwrap_or("")
        )),
    );
    Value::Object(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_retail_purchase_refund_and_dirt() {
        let p = online_retail_event(&[
            Some("536365"),
            Some("85123A"),
            Some("WHITE HANGING HEART T-LIGHT HOLDER"),
            Some("6"),
            Some("2010-12-01 08:26:00"),
            Some("2.55"),
            Some("17850.0"),
            Some("United Kingdom"),
        ]);
        assert_eq!(
            p,
            json!({"type": "purchase", "user_id": "17850", "item_id": "85123A",
                   "occurred_at": "2010-12-01T08:26:00Z",
                   "client_event_id": "uci:536365:85123A:6:2.55:2010-12-01 08:26:00",
                   "properties": {"order_id": "536365", "quantity": 6, "price": 2.55,
                                  "currency": "GBP", "country": "United Kingdom"}})
        );
        let r = online_retail_event(&[
            Some("C536379"),
            Some("D"),
            None,
            Some("-1"),
            Some("2010-12-01 09:41:00"),
            Some("27.5"),
            Some("14527"),
            Some("United Kingdom"),
        ]);
        assert_eq!(r["type"], "refund");
        assert_eq!(r["properties"]["quantity"], 1);
        let no_customer = online_retail_event(&[
            Some("536414"),
            Some("22139"),
            None,
            Some("56"),
            Some("2010-12-01 11:52:00"),
            Some("0"),
            Some(""),
            Some("United Kingdom"),
        ]);
        assert!(no_customer.get("user_id").is_none());
        let garbage = online_retail_event(&[Some("A1"), None, None, Some("x"), None, None, None]);
        assert_eq!(garbage["type"], "bad_debt_adjustment");
        assert_eq!(garbage["properties"]["quantity"], "x");
    }

    #[test]
    fn retailrocket_rows() {
        let e = retailrocket_event(&[
            Some("1433221332117"),
            Some("257597"),
            Some("transaction"),
            Some("355908"),
            Some("4000"),
        ]);
        assert_eq!(e["type"], "purchase");
        assert_eq!(e["user_id"], 257597);
        assert_eq!(e["occurred_at"], "2015-06-02T05:02:12.117Z");
        assert_eq!(e["properties"]["order_id"], "4000");
        let odd = retailrocket_event(&[Some("soon"), Some("1"), Some("like"), Some("2"), None]);
        assert_eq!(odd["type"], "like");
        assert_eq!(odd["occurred_at"], "soon");
    }
}
