package sqlengine

import (
	"strconv"
	"strings"
)

// Lengths Snowflake reports for unbounded text and binary columns.
const (
	maxTextLength   = 16777216
	maxBinaryLength = 8388608
)

// sfType is a Snowflake column type: the lower-case rowtype name plus the
// precision, scale and length the rowtype reports.
type sfType struct {
	Name      string // "fixed", "real", "text", "boolean", "date", "time", "timestamp_ntz", "timestamp_ltz", "timestamp_tz", "binary", "variant", "object", "array"
	Precision int64
	Scale     int64
	Length    int64
}

var (
	typeFixed   = sfType{Name: "fixed", Precision: 38}
	typeReal    = sfType{Name: "real"}
	typeText    = sfType{Name: "text", Length: maxTextLength}
	typeBool    = sfType{Name: "boolean"}
	typeDate    = sfType{Name: "date"}
	typeTime    = sfType{Name: "time", Scale: 9}
	typeNTZ     = sfType{Name: "timestamp_ntz", Scale: 9}
	typeLTZ     = sfType{Name: "timestamp_ltz", Scale: 9}
	typeTZ      = sfType{Name: "timestamp_tz", Scale: 9}
	typeBinary  = sfType{Name: "binary", Length: maxBinaryLength}
	typeVariant = sfType{Name: "variant"}
)

// decl is the SQLite declared type that stores a column of this type. It
// keeps the Snowflake type readable from the schema (and from
// sqlite3_column_decltype) while giving SQLite a suitable affinity.
func (t sfType) decl() string {
	switch t.Name {
	case "fixed":
		return "NUMBER(" + strconv.FormatInt(t.Precision, 10) + "," + strconv.FormatInt(t.Scale, 10) + ")"
	case "real":
		return "FLOAT"
	case "text":
		return "VARCHAR(" + strconv.FormatInt(t.Length, 10) + ")"
	case "boolean":
		return "BOOLEAN"
	case "date":
		return "DATE"
	case "time":
		return "TIME(" + strconv.FormatInt(t.Scale, 10) + ")"
	case "timestamp_ntz", "timestamp_ltz", "timestamp_tz":
		return strings.ToUpper(t.Name) + "(" + strconv.FormatInt(t.Scale, 10) + ")"
	case "binary":
		return "BINARY(" + strconv.FormatInt(t.Length, 10) + ")"
	case "variant", "object", "array":
		return strings.ToUpper(t.Name)
	}
	return "VARCHAR(16777216)"
}

// typeFromName parses a Snowflake type name with its optional arguments
// (e.g. "NUMBER", ["10","2"]). ok is false for a name that is not a type.
func typeFromName(name string, args []int64) (sfType, bool) {
	arg := func(i int, def int64) int64 {
		if i < len(args) {
			return args[i]
		}
		return def
	}
	switch strings.ToUpper(name) {
	case "NUMBER", "NUMERIC", "DECIMAL", "DEC":
		p, s := arg(0, 38), arg(1, 0)
		if p < 1 || p > 38 {
			p = 38
		}
		if s < 0 || s > p {
			s = 0
		}
		return sfType{Name: "fixed", Precision: p, Scale: s}, true
	case "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "BYTEINT":
		return typeFixed, true
	case "FLOAT", "FLOAT4", "FLOAT8", "DOUBLE", "REAL", "DOUBLE PRECISION":
		return typeReal, true
	case "VARCHAR", "STRING", "TEXT", "NVARCHAR", "NVARCHAR2", "CHAR VARYING", "NCHAR VARYING":
		l := arg(0, maxTextLength)
		if l < 1 || l > maxTextLength {
			l = maxTextLength
		}
		return sfType{Name: "text", Length: l}, true
	case "CHAR", "CHARACTER", "NCHAR":
		l := arg(0, 1)
		if l < 1 || l > maxTextLength {
			l = 1
		}
		return sfType{Name: "text", Length: l}, true
	case "BOOLEAN", "BOOL":
		return typeBool, true
	case "DATE":
		return typeDate, true
	case "TIME":
		return sfType{Name: "time", Scale: clampScale(arg(0, 9))}, true
	case "TIMESTAMP", "DATETIME", "TIMESTAMP_NTZ", "TIMESTAMPNTZ", "TIMESTAMP WITHOUT TIME ZONE":
		return sfType{Name: "timestamp_ntz", Scale: clampScale(arg(0, 9))}, true
	case "TIMESTAMP_LTZ", "TIMESTAMPLTZ", "TIMESTAMP WITH LOCAL TIME ZONE":
		return sfType{Name: "timestamp_ltz", Scale: clampScale(arg(0, 9))}, true
	case "TIMESTAMP_TZ", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE":
		return sfType{Name: "timestamp_tz", Scale: clampScale(arg(0, 9))}, true
	case "BINARY", "VARBINARY":
		l := arg(0, maxBinaryLength)
		if l < 1 || l > maxBinaryLength {
			l = maxBinaryLength
		}
		return sfType{Name: "binary", Length: l}, true
	case "VARIANT":
		return typeVariant, true
	case "OBJECT":
		return sfType{Name: "object"}, true
	case "ARRAY":
		return sfType{Name: "array"}, true
	}
	return sfType{}, false
}

func clampScale(s int64) int64 {
	if s < 0 || s > 9 {
		return 9
	}
	return s
}

// typeFromDecl maps an SQLite declared type written by decl (or any other
// declared type) back to a Snowflake type. ok is false for an empty decl.
func typeFromDecl(decl string) (sfType, bool) {
	decl = strings.TrimSpace(decl)
	if decl == "" {
		return sfType{}, false
	}
	name, rest := decl, ""
	if i := strings.IndexByte(decl, '('); i >= 0 {
		name, rest = strings.TrimSpace(decl[:i]), decl[i+1:]
		rest = strings.TrimSuffix(strings.TrimSpace(rest), ")")
	}
	var args []int64
	if rest != "" {
		for _, a := range strings.Split(rest, ",") {
			v, err := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
			if err != nil {
				break
			}
			args = append(args, v)
		}
	}
	if t, ok := typeFromName(name, args); ok {
		return t, true
	}
	// Declared types of tables not created through this engine.
	u := strings.ToUpper(name)
	switch {
	case strings.Contains(u, "INT"):
		return typeFixed, true
	case strings.Contains(u, "CHAR"), strings.Contains(u, "CLOB"), strings.Contains(u, "TEXT"):
		return typeText, true
	case strings.Contains(u, "BLOB"):
		return typeBinary, true
	case strings.Contains(u, "REAL"), strings.Contains(u, "FLOA"), strings.Contains(u, "DOUB"):
		return typeReal, true
	}
	return sfType{}, false
}

// parseTypeTokens reads a type at toks[i:] ("NUMBER(10, 2)", "DOUBLE
// PRECISION", "TIMESTAMP WITH TIME ZONE") and returns it with the index just
// past it.
func parseTypeTokens(toks []token, i int) (sfType, int, bool) {
	if i >= len(toks) || toks[i].kind != tkWord {
		return sfType{}, i, false
	}
	name := toks[i].upper()
	j := i + 1
	// Multi-word type names.
	for _, multi := range []string{"DOUBLE PRECISION", "CHAR VARYING", "NCHAR VARYING", "TIMESTAMP WITHOUT TIME ZONE", "TIMESTAMP WITH LOCAL TIME ZONE", "TIMESTAMP WITH TIME ZONE"} {
		words := strings.Fields(multi)
		if words[0] != name || j+len(words)-1 > len(toks) {
			continue
		}
		match := true
		for k := 1; k < len(words); k++ {
			if !toks[j+k-1].is(words[k]) {
				match = false
				break
			}
		}
		if match {
			name = multi
			j += len(words) - 1
			break
		}
	}
	var args []int64
	if j < len(toks) && toks[j].isOp("(") {
		k := j + 1
		for k < len(toks) && !toks[k].isOp(")") {
			if toks[k].kind == tkNumber {
				v, err := strconv.ParseInt(toks[k].text, 10, 64)
				if err == nil {
					args = append(args, v)
				}
			} else if !toks[k].isOp(",") && toks[k].kind != tkWord {
				return sfType{}, i, false
			}
			k++
		}
		if k >= len(toks) {
			return sfType{}, i, false
		}
		j = k + 1
	}
	t, ok := typeFromName(name, args)
	if !ok {
		return sfType{}, i, false
	}
	return t, j, true
}
