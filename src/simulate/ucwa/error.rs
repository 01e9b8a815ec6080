//! UCWA errors (reference §8): an HTTP status plus the JSON body `{"code","subcode","message"}`.
//!
//! `401` is special: the HTTP layer answers it with the `WWW-Authenticate` challenge and no
//! body, as the token flow of §2 expects.

use serde_json::json;

/// One UCWA error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("UCWA {status} {code}{}: {message}", .subcode.map(|s| format!("/{s}")).unwrap_or_default())]
pub struct UcwaError {
    pub status: u16,
    /// `ErrorCode` (e.g. `Conflict`).
    pub code: &'static str,
    /// `ErrorSubcode` (e.g. `PGetReplaced`); absent for generic errors.
    pub subcode: Option<&'static str>,
    pub message: String,
}

impl UcwaError {
    pub fn new(
        status: u16,
        code: &'static str,
        subcode: Option<&'static str>,
        message: impl Into<String>,
    ) -> UcwaError {
        UcwaError {
            status,
            code,
            subcode,
            message: message.into(),
        }
    }

    /// Missing, unknown or expired token: `401` with the challenge.
    pub fn unauthorized() -> UcwaError {
        UcwaError::new(
            401,
            "Unauthorized",
            None,
            "A valid OAuth token is required.",
        )
    }

    pub fn application_not_found() -> UcwaError {
        UcwaError::new(
            404,
            "NotFound",
            Some("ApplicationNotFound"),
            "The application does not exist.",
        )
    }

    pub fn resource_not_found(what: &str) -> UcwaError {
        UcwaError::new(
            404,
            "NotFound",
            Some("ResourceNotFound"),
            format!("{what} does not exist."),
        )
    }

    pub fn parameter(message: impl Into<String>) -> UcwaError {
        UcwaError::new(
            400,
            "BadRequest",
            Some("ParameterValidationFailure"),
            message,
        )
    }

    pub fn deserialization(message: impl Into<String>) -> UcwaError {
        UcwaError::new(400, "BadRequest", Some("DeserializationFailure"), message)
    }

    pub fn forbidden(subcode: Option<&'static str>, message: impl Into<String>) -> UcwaError {
        UcwaError::new(403, "Forbidden", subcode, message)
    }

    pub fn conflict(subcode: &'static str, message: impl Into<String>) -> UcwaError {
        UcwaError::new(409, "Conflict", Some(subcode), message)
    }

    pub fn pget_replaced() -> UcwaError {
        UcwaError::conflict(
            "PGetReplaced",
            "The pending GET was replaced by a newer pending GET with the same ack.",
        )
    }

    pub fn make_me_available_required() -> UcwaError {
        UcwaError::conflict(
            "MakeMeAvailableRequired",
            "The application must call makeMeAvailable first.",
        )
    }

    pub fn method_not_allowed() -> UcwaError {
        UcwaError::new(
            405,
            "MethodNotAllowed",
            None,
            "The method is not allowed on this resource.",
        )
    }

    pub fn too_large() -> UcwaError {
        UcwaError::new(
            413,
            "EntityTooLarge",
            None,
            "The request body is too large.",
        )
    }

    pub fn unsupported_media_type() -> UcwaError {
        UcwaError::new(
            415,
            "UnsupportedMediaType",
            None,
            "Request bodies must be application/json.",
        )
    }

    /// The JSON body of §8.
    pub fn body(&self) -> String {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(s) = self.subcode {
            v["subcode"] = json!(s);
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&UcwaError::pget_replaced().body()).unwrap();
        assert_eq!(v["code"], "Conflict");
        assert_eq!(v["subcode"], "PGetReplaced");
        assert!(v["message"].is_string());
        let v: serde_json::Value =
            serde_json::from_str(&UcwaError::method_not_allowed().body()).unwrap();
        assert!(v.get("subcode").is_none());
    }
}
