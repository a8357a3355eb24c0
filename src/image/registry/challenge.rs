//! Parsing `WWW-Authenticate` challenges.

use reqwest::Response;
use reqwest::header;

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Challenge {
    pub(super) scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub(super) params: Vec<(String, String)>,
}

impl Challenge {
    pub(super) fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The challenges of all `WWW-Authenticate` headers of a response.
pub(super) fn challenges_of(response: &Response) -> Vec<Challenge> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(parse_challenges)
        .collect()
}

/// Parses `WWW-Authenticate` (RFC 9110 section 11.6.1): one or more
/// challenges, `scheme [param=value, ...]`, values tokens or quoted strings,
/// all separated by commas. Malformed input yields what parsed before it.
pub(super) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut parser = HeaderParser { rest: header };
    let mut challenges = Vec::new();
    loop {
        parser.skip_separators();
        let scheme = parser.token();
        if scheme.is_empty() {
            return challenges;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_string(),
            params: Vec::new(),
        };
        while let Some((name, value)) = parser.param() {
            challenge.params.push((name.to_ascii_lowercase(), value));
        }
        challenges.push(challenge);
    }
}

struct HeaderParser<'a> {
    rest: &'a str,
}

impl<'a> HeaderParser<'a> {
    fn skip_whitespace(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t']);
    }

    fn skip_separators(&mut self) {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
    }

    fn token(&mut self) -> &'a str {
        let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let end = self.rest.find(|c| !is_tchar(c)).unwrap_or(self.rest.len());
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        token
    }

    /// The next `name=value` of the current challenge, or `None` when the
    /// next item is a new challenge (a token not followed by '=') or the end.
    fn param(&mut self) -> Option<(&'a str, String)> {
        let saved = self.rest;
        self.skip_separators();
        let name = self.token();
        self.skip_whitespace();
        let Some(after_equals) = self.rest.strip_prefix('=').filter(|_| !name.is_empty()) else {
            self.rest = saved;
            return None;
        };
        self.rest = after_equals;
        self.skip_whitespace();
        let value = if self.rest.starts_with('"') {
            self.quoted_string()
        } else {
            self.token().to_string()
        };
        Some((name, value))
    }

    /// A quoted string with backslash escapes; an unterminated one runs to
    /// the end of the header.
    fn quoted_string(&mut self) -> String {
        let mut value = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((index, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[index + 1..];
                    return value;
                }
                '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                c => value.push(c),
            }
        }
        self.rest = "";
        value
    }
}
