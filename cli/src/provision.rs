//! Creates the template's resources on an emulator (or any endpoint).

use crate::template::{KeyPart, TableSpec, Template};
use anyhow::{Context, Result};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

fn key_schema(parts: &[KeyPart]) -> Result<Vec<KeySchemaElement>> {
    parts
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .context("key schema")
        })
        .collect()
}

/// Creates `table` unless a table of that name exists; returns true when it created it.
pub async fn ensure_table(client: &Client, table: &TableSpec) -> Result<bool> {
    if client
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
        .is_ok()
    {
        return Ok(false);
    }
    let mut req = client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.key)?));
    for (name, kind) in &table.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for index in &table.indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection.as_str()))
            .set_non_key_attributes(
                (!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()),
            )
            .build();
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key)?))
                .projection(projection)
                .build()?,
        );
    }
    if let Some(view) = &table.stream_view_type {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        // Someone else (a parallel test, another local stack) created it first.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(false);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("creating table {}", table.name)));
        }
    }
    if let Some(attr) = &table.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&table.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("enabling TTL on {}", table.name))?;
    }
    Ok(true)
}

/// Creates every resource of the template the local stack emulates.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &Template,
) -> Result<Vec<(TableSpec, bool)>> {
    let dynamo = Client::new(sdk);
    let mut out = Vec::new();
    for table in template.tables() {
        let created = ensure_table(&dynamo, &table).await?;
        out.push((table, created));
    }
    Ok(out)
}
