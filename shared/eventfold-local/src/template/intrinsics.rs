//! Intrinsic functions and physical names, resolved as CloudFormation would: `!Ref`,
//! `!GetAtt`, `!Sub`, `!Join`, pseudo parameters, ARNs and queue URLs.

use super::{LOCAL_ACCOUNT, Template, flag, text};
use serde_json::Value;

impl Template {
    /// Physical name of a table, queue or topic: its name property when set, else
    /// `{stack}-{LogicalId}` (plus `.fifo` for FIFO queues and topics, as CloudFormation does).
    pub fn resource_name(&self, logical_id: &str) -> String {
        let props = self.properties(logical_id);
        let (name_key, fifo_key) = match self.resource_type(logical_id) {
            Some("AWS::DynamoDB::Table") => ("TableName", None),
            Some("AWS::SQS::Queue") => ("QueueName", Some("FifoQueue")),
            Some("AWS::SNS::Topic") => ("TopicName", Some("FifoTopic")),
            _ => return self.physical_name(logical_id),
        };
        if let Some(name) = props
            .and_then(|p| p.get(name_key))
            .and_then(|v| self.resolve(v))
        {
            return name;
        }
        let fifo = fifo_key.is_some_and(|k| flag(props.and_then(|p| p.get(k))));
        let base = self.physical_name(logical_id);
        if fifo { format!("{base}.fifo") } else { base }
    }

    /// ARN of a queue or topic of the template.
    pub fn arn(&self, logical_id: &str) -> Option<String> {
        let name = self.resource_name(logical_id);
        let service = match self.resource_type(logical_id)? {
            "AWS::SQS::Queue" => "sqs",
            "AWS::SNS::Topic" => "sns",
            "AWS::DynamoDB::Table" => {
                return Some(format!(
                    "arn:aws:dynamodb:{}:{LOCAL_ACCOUNT}:table/{name}",
                    self.region
                ));
            }
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                return Some(format!(
                    "arn:aws:lambda:{}:{LOCAL_ACCOUNT}:function:{name}",
                    self.region
                ));
            }
            _ => return None,
        };
        Some(format!(
            "arn:aws:{service}:{}:{LOCAL_ACCOUNT}:{name}",
            self.region
        ))
    }

    /// URL of a queue: the one the emulator returned once provisioned, else the AWS form.
    pub fn queue_url(&self, logical_id: &str) -> String {
        self.runtime(logical_id, "Ref").unwrap_or_else(|| {
            format!(
                "https://sqs.{}.amazonaws.com/{LOCAL_ACCOUNT}/{}",
                self.region,
                self.resource_name(logical_id)
            )
        })
    }

    /// Physical name of a resource in the local stack.
    pub fn physical_name(&self, logical_id: &str) -> String {
        format!("{}-{logical_id}", self.stack)
    }

    fn get_att(&self, res: &str, attr: &str) -> Option<String> {
        if let Some(v) = self.runtime(res, attr) {
            return Some(v);
        }
        match (self.resource_type(res)?, attr) {
            ("AWS::DynamoDB::Table", "Arn")
            | ("AWS::SQS::Queue", "Arn")
            | ("AWS::SNS::Topic", "TopicArn")
            | ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => self.arn(res),
            ("AWS::SQS::Queue", "QueueName") | ("AWS::SNS::Topic", "TopicName") => {
                Some(self.resource_name(res))
            }
            ("AWS::SQS::Queue", "QueueUrl") => Some(self.queue_url(res)),
            // Before (or without) provisioning, a KMS key is named by the alias provisioning
            // gives it (`alias/{stack}-{LogicalId}`, `provision::ensure_kms_key`): KMS takes
            // an alias ARN wherever a key id goes, so a process that did not provision (the
            // CLI) reaches the same key.
            ("AWS::KMS::Key", "Arn") => Some(format!(
                "arn:aws:kms:{}:{LOCAL_ACCOUNT}:alias/{}",
                self.region,
                self.physical_name(res)
            )),
            // As CloudFormation returns it: the group's ARN with `:*` (its log streams).
            ("AWS::Logs::LogGroup", "Arn") => {
                let name = self
                    .properties(res)
                    .and_then(|p| p.get("LogGroupName"))
                    .and_then(|v| self.resolve(v))
                    .unwrap_or_else(|| self.physical_name(res));
                Some(format!(
                    "arn:aws:logs:{}:{LOCAL_ACCOUNT}:log-group:{name}:*",
                    self.region
                ))
            }
            _ => None,
        }
    }

    fn reference(&self, name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some(self.stack.clone()),
            "AWS::Region" => Some(self.region.clone()),
            "AWS::AccountId" => Some(LOCAL_ACCOUNT.to_owned()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            _ => self.parameters.get(name).cloned().or_else(|| {
                if let Some(v) = self.runtime(name, "Ref") {
                    return Some(v);
                }
                Some(match self.resource_type(name)? {
                    // As in CloudFormation: a topic's Ref is its ARN, a queue's its URL.
                    "AWS::SNS::Topic" => self.arn(name)?,
                    "AWS::SQS::Queue" => self.queue_url(name),
                    "AWS::DynamoDB::Table" => self.resource_name(name),
                    _ => self.physical_name(name),
                })
            }),
        }
    }

    /// Resolves intrinsic functions to a string, when the local stack can know the value.
    pub fn resolve(&self, v: &Value) -> Option<String> {
        if let Some(t) = text(v) {
            return Some(t);
        }
        let obj = v.as_object()?;
        if obj.len() != 1 {
            return None;
        }
        let (fun, arg) = obj.iter().next()?;
        match fun.as_str() {
            "Ref" => self.reference(arg.as_str()?),
            "Fn::GetAtt" => {
                let parts = arg.as_array()?;
                self.get_att(parts.first()?.as_str()?, parts.get(1)?.as_str()?)
            }
            "Fn::Sub" => {
                let (pattern, vars) = match arg {
                    Value::String(s) => (s.as_str(), None),
                    Value::Array(a) => (a.first()?.as_str()?, a.get(1).and_then(Value::as_object)),
                    _ => return None,
                };
                let mut out = String::new();
                let mut rest = pattern;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}')? + start;
                    let name = &rest[start + 2..end];
                    let value = match vars.and_then(|m| m.get(name)) {
                        Some(v) => self.resolve(v)?,
                        None => match name.split_once('.') {
                            Some((res, attr)) => self.get_att(res, attr)?,
                            None => self.reference(name)?,
                        },
                    };
                    out.push_str(&value);
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                Some(out)
            }
            "Fn::Join" => {
                let parts = arg.as_array()?;
                let sep = parts.first()?.as_str()?;
                let items = parts.get(1)?.as_array()?;
                let resolved: Option<Vec<String>> = items.iter().map(|i| self.resolve(i)).collect();
                Some(resolved?.join(sep))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::FANOUT;
    use super::*;

    #[test]
    fn refs_of_topics_and_queues_resolve_like_cloudformation() {
        let mut t = Template::parse(FANOUT, "st", "eu-west-1").expect("parses");
        let env = |t: &Template| t.function("Publisher").expect("publisher").environment;
        let e = env(&t);
        assert_eq!(
            e["TOPIC"],
            "arn:aws:sns:eu-west-1:123456789012:st-events.fifo"
        );
        assert_eq!(
            e["QUEUE"],
            "https://sqs.eu-west-1.amazonaws.com/123456789012/st-work.fifo"
        );
        assert_eq!(
            e["QUEUE_ARN"],
            "arn:aws:sqs:eu-west-1:123456789012:st-work.fifo"
        );
        // Once provisioned, the emulator's URL wins.
        t.set_runtime(
            "Work",
            "Ref",
            "http://127.0.0.1:1/123456789012/st-work.fifo",
        );
        assert_eq!(
            env(&t)["QUEUE"],
            "http://127.0.0.1:1/123456789012/st-work.fifo"
        );
        assert_eq!(
            t.queue_url("Work"),
            "http://127.0.0.1:1/123456789012/st-work.fifo"
        );
        // A stream ARN is only known from the emulator.
        let stream = serde_json::json!({"Fn::GetAtt": ["Events", "StreamArn"]});
        assert_eq!(t.resolve(&stream), None);
        t.set_runtime("Events", "StreamArn", "arn:stream");
        assert_eq!(t.resolve(&stream).as_deref(), Some("arn:stream"));
    }
}
