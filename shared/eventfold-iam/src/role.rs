//! A function's execution role: who it is in a denial and every statement it holds.

use crate::policy::Statement;

/// A function's execution role.
#[derive(Debug, Clone)]
pub struct Role {
    /// The function's logical id.
    pub function: String,
    /// The role's logical id (`{Function}Role` in SAM's translation).
    pub role: String,
    /// The principal AWS names in a denial: the role assumed with the function's name as the
    /// session (`arn:aws:sts::ACCOUNT:assumed-role/{role name}/{function name}`).
    pub principal: String,
    /// Every statement of its inline and managed policies, in order.
    pub statements: Vec<Statement>,
}

impl Role {
    /// IAM's decision on `action` on `resource` for this role.
    pub fn decide(&self, action: &str, resource: &str) -> crate::Decision {
        crate::evaluate(&self.statements, &self.principal, action, resource)
    }
}
