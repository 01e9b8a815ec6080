//! PWS error codes (reference §7) and their REST rendering (reference §5.3).

/// A PWS error: the numeric code decides the HTTP status, message and fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PWS error {} ({})", .0, info(*.0).1)]
pub struct PwsError(pub u16);

/// (HTTP status, message, fix) for a code. Messages for codes without a captured text are
/// written from the reference's one-line descriptions.
pub fn info(code: u16) -> (u16, &'static str, &'static str) {
    match code {
        100 => (
            401,
            "No session key in the request",
            "Send the Presence-Session-Key header",
        ),
        101 => (
            401,
            "The session key is not valid",
            "Log in again to get a new session key",
        ),
        102 => (
            400,
            "The XML in the request could not be parsed",
            "Send a well-formed XML body",
        ),
        103 => (
            400,
            "The XML root element is not valid for this request",
            "Use the root element documented for this request",
        ),
        110 => (
            400,
            "Presence type must be BASIC_PRESENCE or RICH_PRESENCE",
            "Use basic or rich",
        ),
        111 => (
            400,
            "The password is empty",
            "Send the application user's password",
        ),
        112 => (
            400,
            "The login request is not in the correct format",
            "Send <session><password>…</password></session>",
        ),
        113 => (
            404,
            "The username is empty or not valid",
            "Use the name of a user known to the server",
        ),
        114 => (400, "Login failed", "Check the username and password"),
        115 => (
            400,
            "The basic presence is empty",
            "Send <presence>STATE</presence>",
        ),
        120 => (400, "Set presence failed", "Send a valid presence state"),
        121 => (
            400,
            "AVAILABLE can only be set with Presence-Override false",
            "Set Presence-Override: false",
        ),
        122 => (
            400,
            "DND can only be set with Presence-Override true",
            "Set Presence-Override: true",
        ),
        123 => (
            400,
            "An endpoint update must not contain a URL",
            "Send only the new expiry",
        ),
        124 => (400, "The contact URI is not valid", "Use user@domain"),
        125 => (
            400,
            "Presence-Override must be true or false",
            "Send Presence-Override: true or false",
        ),
        130 => (
            400,
            "The endpoint URL is empty",
            "Send <endpoint><url>…</url></endpoint>",
        ),
        131 => (
            400,
            "The expiry must be between 3600 and 86400 seconds",
            "Send Presence-Expiry within 3600-86400",
        ),
        132 => (
            400,
            "The endpoint id does not exist",
            "Register the endpoint again",
        ),
        133 => (400, "The subscription id does not exist", "Subscribe again"),
        134 => (
            400,
            "The subscription type must be PRESENCE_NOTIFICATION",
            "Send <subscriptionType>PRESENCE_NOTIFICATION</subscriptionType>",
        ),
        135 => (
            400,
            "The number of contacts must be between 1 and 5000",
            "Split the contacts over several subscriptions",
        ),
        136 => (
            400,
            "The endpoint belongs to another session",
            "Use an endpoint registered by this application user",
        ),
        137 => (
            400,
            "The subscription belongs to another session",
            "Use a subscription of this user",
        ),
        138 => (400, "No free endpoints", "Unregister unused endpoints"),
        139 => (
            400,
            "No free subscriptions",
            "Unsubscribe unused subscriptions",
        ),
        140 => (
            400,
            "An end user session key is required",
            "Log in the end user and use its key",
        ),
        141 => (
            400,
            "An application user session key is required",
            "Use the application user's key",
        ),
        142 => (
            400,
            "The endpoint URL contains spaces",
            "Encode or remove the spaces",
        ),
        143 => (
            400,
            "A contact is null or empty",
            "Give every contact a contactURI",
        ),
        144 => (
            400,
            "The contact is not in the subscription",
            "Remove only subscribed contacts",
        ),
        145 => (
            400,
            "Neither an expiry nor contacts were given",
            "Send an expiry or contacts to add",
        ),
        146 => (400, "No contact list in the request", "Send <contactsList>"),
        147 => (
            400,
            "Invalid element in the contact list",
            "Send only <contact> elements",
        ),
        148 => (
            400,
            "Invalid contact attribute",
            "Use the contactURI attribute",
        ),
        150 => (
            400,
            "The request body could not be read",
            "Send a UTF-8 body of at most 1 MiB",
        ),
        160 => (
            409,
            "The user is already logged in",
            "Log out or use a forced login",
        ),
        161 => (
            400,
            "With override the tuple id must be pws-override or pws-persistent",
            "Use tuple id pws-override",
        ),
        162 => (
            400,
            "A tuple has no valid source element",
            "Add <source xmlns=\"urn:cisco:params:xml:ns:pidf:source\">",
        ),
        200 => (500, "Server error", "Retry later"),
        201 => (500, "Unregister failed", "Retry later"),
        202 => (500, "Subscribe failed", "Retry later"),
        203 => (500, "Unsubscribe failed", "Retry later"),
        204 => (500, "Set presence failed", "Retry later"),
        205 => (500, "Logout failed", "Retry later"),
        206 => (500, "No endpoint id", "Retry later"),
        207 => (500, "No subscription id", "Retry later"),
        208 => (500, "Login failed", "Retry later"),
        209 => (500, "Register failed", "Retry later"),
        210 => (
            503,
            "Maximum CPU utilization reached",
            "Wait before sending another request",
        ),
        211 => (
            503,
            "No free SIP subscriptions",
            "Reduce the number of contacts",
        ),
        212 => (
            503,
            "Maximum number of requests per second reached",
            "Wait before sending another request",
        ),
        _ => (500, "Server error", "Retry later"),
    }
}

impl PwsError {
    pub fn code(self) -> u16 {
        self.0
    }

    pub fn status(self) -> u16 {
        info(self.0).0
    }

    /// The REST error body, exactly in the captured shape of reference §5.3.
    pub fn body(self) -> String {
        let (_, message, fix) = info(self.0);
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<description xmlns=\"urn:cisco:cup:presence:soap\"><code>");
        out.push_str(&self.0.to_string());
        out.push_str("</code><message>");
        super::xml::escape_into(&mut out, message);
        out.push_str("</message><fix>");
        super::xml::escape_into(&mut out, fix);
        out.push_str("</fix></description>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_code_table() {
        let rows = [
            (100, 401),
            (101, 401),
            (102, 400),
            (113, 404),
            (133, 400),
            (160, 409),
            (200, 500),
            (210, 503),
            (211, 503),
            (212, 503),
        ];
        for (code, status) in rows {
            assert_eq!(PwsError(code).status(), status, "code {code}");
        }
    }

    #[test]
    fn body_is_the_captured_shape() {
        let b = PwsError(133).body();
        assert!(b.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<description xmlns=\"urn:cisco:cup:presence:soap\"><code>133</code><message>The subscription id does not exist</message><fix>"));
        let el = super::super::xml::parse(&b).unwrap();
        assert_eq!(el.child_text("code"), Some("133"));
    }
}
