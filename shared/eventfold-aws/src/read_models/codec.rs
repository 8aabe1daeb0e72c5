//! The read-models table's items: documents and checkpoints to and from items, keys, the
//! batched read with its retries of unprocessed keys, and list cursors.

use super::*;

pub(super) fn doc_pk(tenant: &str, view: &str) -> String {
    format!("{tenant}#{view}")
}

pub(super) fn checkpoint_pk(view: &str) -> String {
    format!("_cp#{view}")
}

pub(super) fn corrupt(detail: impl Into<String>) -> ReadModelError {
    ReadModelError::Corrupt(detail.into())
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, ReadModelError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("attribute {name} missing or not a string"))),
    }
}

pub(super) fn get_count(item: &Item, name: &str) -> Result<u64, ReadModelError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(format!("attribute {name}={v} is not a checkpoint"))),
        Some(_) => Err(corrupt(format!("attribute {name} is not a number"))),
    }
}

/// The item of `doc` in `view` for `tenant`.
pub(super) fn encode_doc(tenant: &str, view: &str, doc: &Doc) -> Result<Item, ReadModelError> {
    let pk = doc_pk(tenant, view);
    let mut item = HashMap::from([
        ("sk".to_owned(), s(&doc.key)),
        ("checkpoint".to_owned(), n(doc.checkpoint)),
    ]);
    if !doc.data.is_null() {
        item.insert(
            "data".to_owned(),
            to_attr(&doc.data).map_err(|e| corrupt(e.to_string()))?,
        );
        // A Null document is hidden from lists: it is left out of the (sparse) index too.
        if let Some((partition, sort)) = &doc.index {
            item.insert("gsi1pk".to_owned(), s(format!("{pk}#{partition}")));
            item.insert("gsi1sk".to_owned(), s(sort));
        }
    }
    item.insert("pk".to_owned(), s(pk));
    Ok(item)
}

/// The document an item holds.
pub(super) fn decode_doc(item: &Item) -> Result<Doc, ReadModelError> {
    let pk = get_s(item, "pk")?;
    let key = get_s(item, "sk")?.to_owned();
    let checkpoint = get_count(item, "checkpoint")?;
    let data = if matches!(item.get("kind"), Some(AttributeValue::S(k)) if k == "counter") {
        let mut counters = Map::new();
        for (name, value) in item {
            if let Some(counter) = name.strip_prefix(COUNTER_PREFIX) {
                let AttributeValue::N(v) = value else {
                    return Err(corrupt(format!(
                        "counter {name} of {pk} {key} is not a number"
                    )));
                };
                let v: i64 = v.parse().map_err(|_| {
                    corrupt(format!(
                        "counter {name}={v} of {pk} {key} is not an integer"
                    ))
                })?;
                counters.insert(counter.to_owned(), v.into());
            }
        }
        Value::Object(counters)
    } else {
        match item.get("data") {
            None => Value::Null,
            Some(attr) => from_attr(attr).map_err(|e| corrupt(e.to_string()))?,
        }
    };
    let index = match (item.get("gsi1pk"), item.get("gsi1sk")) {
        (Some(AttributeValue::S(p)), Some(AttributeValue::S(sort))) => {
            let partition = p
                .strip_prefix(pk)
                .and_then(|rest| rest.strip_prefix('#'))
                .ok_or_else(|| corrupt(format!("index key {p} does not belong to {pk}")))?;
            Some((partition.to_owned(), sort.clone()))
        }
        _ => None,
    };
    Ok(Doc {
        key,
        data,
        checkpoint,
        index,
    })
}

/// The table key (`pk`, `sk`) of what `key` names.
pub(super) fn model_key(key: &ModelKey) -> (String, String) {
    match key {
        ModelKey::Doc { tenant, view, key } => (doc_pk(tenant, view), key.clone()),
        ModelKey::Checkpoint { view, stream_id } => (checkpoint_pk(view), stream_id.clone()),
        ModelKey::Pointer { view } => (super::versions::POINTER_PK.to_owned(), view.clone()),
    }
}

pub(super) fn key_item((pk, sk): &(String, String)) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// The items stored at `keys` (distinct), read in chunks of [`BATCH_GET_KEYS`] through
/// `round`, which reads some keys and answers (items found, keys left unprocessed). Keys left
/// unprocessed are asked again after a backoff; [`BATCH_GET_IDLE_ROUNDS`] rounds in a row that
/// find nothing new make it give up.
pub(super) async fn read_batched<F, Fut, S, SFut>(
    keys: Vec<Item>,
    mut round: F,
    mut sleep: S,
) -> Result<Vec<Item>, ReadModelError>
where
    F: FnMut(Vec<Item>) -> Fut,
    Fut: Future<Output = Result<(Vec<Item>, Vec<Item>), ReadModelError>>,
    S: FnMut(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let mut items = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(BATCH_GET_KEYS) {
        let mut pending = chunk.to_vec();
        let mut idle = 0u32;
        let mut backoff = BATCH_GET_BACKOFF;
        loop {
            let asked = pending.len();
            let (got, unprocessed) = round(pending).await?;
            let progressed = !got.is_empty() || unprocessed.len() < asked;
            items.extend(got);
            if unprocessed.is_empty() {
                break;
            }
            if progressed {
                idle = 0;
                backoff = BATCH_GET_BACKOFF;
            } else {
                idle += 1;
                if idle >= BATCH_GET_IDLE_ROUNDS {
                    return Err(ReadModelError::Unavailable(
                        format!(
                            "{} keys left unprocessed by {idle} batched reads in a row",
                            unprocessed.len()
                        )
                        .into(),
                    ));
                }
            }
            sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
            pending = unprocessed;
        }
    }
    Ok(items)
}

/// The cursor of a `LastEvaluatedKey` (string key attributes only).
pub(super) fn encode_cursor(key: &Item) -> Result<String, ReadModelError> {
    let mut map = BTreeMap::new();
    for (name, value) in key {
        let AttributeValue::S(v) = value else {
            return Err(corrupt(format!("key attribute {name} is not a string")));
        };
        map.insert(name.as_str(), v.as_str());
    }
    let json = serde_json::to_vec(&map).map_err(|e| corrupt(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// The start key a cursor stands for, if it continues a query on exactly `expect` (names of
/// the key attributes, with the value the partition must have for the first one).
pub(super) fn decode_cursor(
    cursor: &str,
    names: &[&str],
    partition: (&str, &str),
) -> Result<Item, ReadModelError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| ReadModelError::InvalidCursor)?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|_| ReadModelError::InvalidCursor)?;
    let same_names = map.len() == names.len() && names.iter().all(|n| map.contains_key(*n));
    if !same_names || map.get(partition.0).map(String::as_str) != Some(partition.1) {
        return Err(ReadModelError::InvalidCursor);
    }
    Ok(map.into_iter().map(|(k, v)| (k, s(v))).collect())
}
