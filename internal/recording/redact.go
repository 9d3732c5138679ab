package recording

import (
	"bytes"
	"encoding/json"
	"net/url"
	"regexp"
	"sort"
	"strings"
)

// Redacted replaces every secret value the redactor removes.
const Redacted = "[REDACTED]"

// secretKeys are JSON keys whose values are secrets wherever they appear
// (compared case-insensitively): login credentials, session and master
// tokens, stage credentials, result and stage encryption keys, SSE-C headers.
var secretKeys = map[string]bool{
	"password": true, "passcode": true, "token": true, "mastertoken": true,
	"sessiontoken": true, "oldsessiontoken": true, "idtoken": true, "id_token": true,
	"access_token": true, "refresh_token": true, "oauth_token": true,
	"privatekey": true, "private_key": true, "private_key_pwd": true,
	"qrmk": true, "querystagemasterkey": true, "creds": true,
	"aws_key_id": true, "aws_secret_key": true, "aws_token": true, "aws_id": true, "aws_key": true,
	"azure_sas_token": true, "gcs_access_token": true,
	"x-amz-server-side-encryption-customer-key":     true,
	"x-amz-server-side-encryption-customer-key-md5": true,
	"x-ms-encryption-key":                           true,
	"x-ms-encryption-key-sha256":                    true,
	"x-goog-encryption-key":                         true,
	"x-goog-encryption-key-sha256":                  true,
	"mfatoken":                                      true, "proof_key": true, "raw_saml_response": true, "ext_authn_duo_method": true,
	"client_secret": true, "presignedurl": true,
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
	"set-cookie":          true,
}

// secretParams are URL query parameters that carry signatures or
// credentials (presigned S3, Azure SAS and GCS URLs; tokens in queries).
var secretParams = map[string]bool{
	"x-amz-signature": true, "x-amz-credential": true, "x-amz-security-token": true,
	"signature": true, "awsaccesskeyid": true, "sig": true,
	"x-goog-signature": true, "x-goog-credential": true,
	"x-amz-server-side-encryption-customer-key": true,
	"token": true, "password": true, "access_token": true,
}

// IsSecretKey reports whether a JSON key or header name holds a secret.
func IsSecretKey(name string) bool { return secretKeys[strings.ToLower(name)] }

// isSecretParam reports whether a URL query parameter holds a secret: the
// listed ones, and any whose name ends in "signature", "credential" or
// "token" (providers and the emulator name their signatures differently).
func isSecretParam(name string) bool {
	n := strings.ToLower(name)
	return secretParams[n] || strings.HasSuffix(n, "signature") || strings.HasSuffix(n, "credential") || strings.HasSuffix(n, "token")
}

// RedactRecord removes secrets from every field of rec that can hold one:
// headers, the URL path, SQL text, bindings, body, error and note text.
// Result rows and data are the query's data and are left alone (the result
// policy governs them).
func RedactRecord(rec *Record) {
	if len(rec.Headers) > 0 {
		h := make(map[string]string, len(rec.Headers))
		for k, v := range rec.Headers {
			if IsSecretKey(k) {
				v = Redacted
			} else {
				v = RedactText(v)
			}
			h[k] = v
		}
		rec.Headers = h
	}
	rec.Path = RedactURL(rec.Path)
	rec.SQL = RedactSQL(rec.SQL)
	rec.Bindings = RedactJSON(rec.Bindings)
	rec.Body = RedactJSON(rec.Body)
	if rec.Error != nil {
		e := *rec.Error
		e.Message = RedactText(e.Message)
		rec.Error = &e
	}
	rec.Note = RedactText(rec.Note)
}

// RedactJSON returns doc with the value of every secret key replaced, and
// secrets in URLs inside strings removed. Numbers keep their exact text.
// Input that is not JSON is returned as a JSON string of its redacted text,
// so the record still encodes.
func RedactJSON(doc json.RawMessage) json.RawMessage {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		b, _ := json.Marshal(RedactText(string(doc)))
		return b
	}
	out, err := json.Marshal(redactValue(v))
	if err != nil {
		b, _ := json.Marshal(Redacted)
		return b
	}
	return out
}

func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if IsSecretKey(k) && x != nil {
				t[k] = Redacted
				continue
			}
			t[k] = redactValue(x)
		}
		return t
	case []any:
		for i, x := range t {
			t[i] = redactValue(x)
		}
		return t
	case string:
		return RedactText(t)
	}
	return v
}

// RedactURL removes signature and credential parameters from a URL (or a
// path with a query), keeping the rest readable.
func RedactURL(s string) string {
	i := strings.IndexByte(s, '?')
	if i < 0 {
		return s
	}
	q, err := url.ParseQuery(s[i+1:])
	if err != nil {
		// Unparsable query: keep the path, drop the query.
		return s[:i+1] + Redacted
	}
	changed := false
	for k := range q {
		if isSecretParam(k) {
			q[k] = []string{Redacted}
			changed = true
		}
	}
	if !changed {
		return s
	}
	return s[:i+1] + q.Encode()
}

var (
	urlPattern = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+`)
	// key = 'value' (SQL), key: value, "key":"value" in free text.
	sqlSecretPattern  = regexp.MustCompile(`(?i)\b(PASSWORD|TOKEN|AWS_KEY_ID|AWS_SECRET_KEY|AWS_TOKEN|AZURE_SAS_TOKEN|MASTER_KEY|PRIVATE_KEY|SECRET_STRING|API_KEY|CLIENT_SECRET|OAUTH_CLIENT_SECRET|OAUTH_REFRESH_TOKEN)(\s*=\s*)('(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|\$\$.*?\$\$|[^\s,)]+)`)
	jsonSecretPattern = jsonSecretRegexp()
	bearerPattern     = regexp.MustCompile(`(?i)\b(Snowflake Token="|Bearer\s+)[^"\s]+`)
)

// jsonSecretRegexp matches `"key": "value"` in free text for every key of
// secretKeys, so text and JSON redaction know the same secrets.
func jsonSecretRegexp() *regexp.Regexp {
	keys := make([]string, 0, len(secretKeys))
	for k := range secretKeys {
		keys = append(keys, regexp.QuoteMeta(k))
	}
	sort.Strings(keys)
	return regexp.MustCompile(`(?i)("(?:` + strings.Join(keys, "|") + `)"\s*:\s*)"(?:[^"\\]|\\.)*"`)
}

// RedactSQL replaces the values of credential options in SQL text
// (PASSWORD = '…', CREDENTIALS = (AWS_SECRET_KEY = '…'), MASTER_KEY = '…').
func RedactSQL(sql string) string {
	if sql == "" {
		return sql
	}
	return sqlSecretPattern.ReplaceAllString(sql, "$1$2'"+Redacted+"'")
}

// RedactText removes what looks like a secret from free text: URL
// signatures, SQL credential options, JSON secret fields, bearer tokens.
func RedactText(s string) string {
	if s == "" {
		return s
	}
	s = urlPattern.ReplaceAllStringFunc(s, RedactURL)
	s = RedactSQL(s)
	s = jsonSecretPattern.ReplaceAllString(s, `$1"`+Redacted+`"`)
	s = bearerPattern.ReplaceAllString(s, "$1"+Redacted)
	return s
}
