package sqlengine

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// Storage layouts of temporal values inside SQLite. They sort as text in
// time order (for one time zone), which keeps ORDER BY and comparisons right.
const (
	layoutDate  = "2006-01-02"
	layoutTime  = "15:04:05.000000000"
	layoutNTZ   = "2006-01-02 15:04:05.000000000"
	layoutTZ    = "2006-01-02 15:04:05.000000000 -07:00"
	parseLayout = "2006-01-02 15:04:05.999999999"
)

// valueError is a conversion failure with the Snowflake code it maps to.
type valueError struct{ code, state, msg string }

func (e *valueError) Error() string { return "sg:" + e.code + ":" + e.state + ": " + e.msg }

func numericError(v any) error {
	return &valueError{code: codeNumericParse, state: "22018", msg: fmt.Sprintf("Numeric value '%v' is not recognized", v)}
}

func timeError(kind string, v any) error {
	return &valueError{code: codeDateParse, state: "22007", msg: fmt.Sprintf("%s '%v' is not recognized", kind, v)}
}

// parseTimestamp reads the text forms of a timestamp Snowflake accepts, and
// epoch numbers. hasZone tells whether the text carried an offset.
func parseTimestamp(s string) (t time.Time, hasZone bool, err error) {
	s = strings.TrimSpace(s)
	for _, l := range []string{parseLayout + " -07:00", parseLayout + " -0700", parseLayout + "Z07:00", "2006-01-02T15:04:05.999999999Z07:00", parseLayout + " Z07:00"} {
		if t, err := time.Parse(l, s); err == nil {
			return t, true, nil
		}
	}
	for _, l := range []string{parseLayout, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04", "2006-01-02T15:04", layoutDate} {
		if t, err := time.Parse(l, s); err == nil {
			return t, false, nil
		}
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return epochToTime(n), true, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) && math.Abs(f) < 1e11 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true, nil
	}
	return time.Time{}, false, timeError("Timestamp", s)
}

// epochToTime interprets an integer as seconds, milliseconds, microseconds
// or nanoseconds since the epoch by magnitude, as Snowflake does.
func epochToTime(n int64) time.Time {
	a := n
	if a < 0 {
		a = -a
	}
	switch {
	case a < 31536000000:
		return time.Unix(n, 0).UTC()
	case a < 31536000000000:
		return time.UnixMilli(n).UTC()
	case a < 31536000000000000:
		return time.UnixMicro(n).UTC()
	default:
		return time.Unix(0, n).UTC()
	}
}

func parseTimeOfDay(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for _, l := range []string{"15:04:05.999999999", "15:04"} {
		if t, err := time.Parse(l, s); err == nil {
			return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond()), nil
		}
	}
	if t, _, err := parseTimestamp(s); err == nil {
		return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second + time.Duration(t.Nanosecond()), nil
	}
	return 0, timeError("Time", s)
}

// toStorage converts a value (as SQLite hands it to a function, or as a
// bind) into the representation a column of type t stores.
func toStorage(v any, t sfType) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t.Name {
	case "fixed":
		switch x := v.(type) {
		case int64:
			return x, nil
		case float64:
			if t.Scale == 0 {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					return nil, numericError(x)
				}
				return int64(math.Round(x)), nil
			}
			p := math.Pow10(int(t.Scale))
			return math.Round(x*p) / p, nil
		case bool:
			if x {
				return int64(1), nil
			}
			return int64(0), nil
		case string, []byte:
			s := strings.TrimSpace(fmt.Sprint(str(x)))
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return n, nil
			}
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, numericError(s)
			}
			return toStorage(f, t)
		}
	case "real":
		switch x := v.(type) {
		case int64:
			return float64(x), nil
		case float64:
			return x, nil
		case bool:
			if x {
				return 1.0, nil
			}
			return 0.0, nil
		case string, []byte:
			s := strings.TrimSpace(str(x))
			switch strings.ToLower(s) {
			case "nan":
				return math.NaN(), nil
			case "inf", "infinity":
				return math.Inf(1), nil
			case "-inf", "-infinity":
				return math.Inf(-1), nil
			}
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, numericError(s)
			}
			return f, nil
		}
	case "text":
		s := textOf(v)
		if t.Length > 0 && int64(len(s)) > t.Length && t.Length < maxTextLength {
			return nil, &valueError{code: "100078", state: "22000", msg: fmt.Sprintf("String '%s' is too long and would be truncated", s)}
		}
		return s, nil
	case "boolean":
		switch x := v.(type) {
		case int64:
			return b2i(x != 0), nil
		case float64:
			return b2i(x != 0), nil
		case bool:
			return b2i(x), nil
		case string, []byte:
			switch strings.ToLower(strings.TrimSpace(str(x))) {
			case "true", "t", "yes", "y", "on", "1":
				return int64(1), nil
			case "false", "f", "no", "n", "off", "0":
				return int64(0), nil
			}
			return nil, &valueError{code: "100037", state: "22018", msg: fmt.Sprintf("Boolean value '%s' is not recognized", str(x))}
		}
	case "date":
		tm, err := timeOf(v, "Date")
		if err != nil {
			return nil, err
		}
		return tm.Format(layoutDate), nil
	case "time":
		switch x := v.(type) {
		case string, []byte:
			d, err := parseTimeOfDay(str(x))
			if err != nil {
				return nil, err
			}
			return formatTimeOfDay(d), nil
		case time.Time:
			return x.Format(layoutTime), nil
		case int64:
			return formatTimeOfDay(time.Duration(x%86400) * time.Second), nil
		}
		return nil, timeError("Time", v)
	case "timestamp_ntz":
		tm, err := timeOf(v, "Timestamp")
		if err != nil {
			return nil, err
		}
		return tm.Format(layoutNTZ), nil
	case "timestamp_ltz", "timestamp_tz":
		tm, err := timeOf(v, "Timestamp")
		if err != nil {
			return nil, err
		}
		return tm.Format(layoutTZ), nil
	case "binary":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			b, err := hex.DecodeString(strings.TrimSpace(x))
			if err != nil {
				return nil, &valueError{code: "100115", state: "22000", msg: fmt.Sprintf("The following string is not a legal hex-encoded value: '%s'", x)}
			}
			return b, nil
		}
		return nil, &valueError{code: "100115", state: "22000", msg: fmt.Sprintf("The value '%v' is not binary", v)}
	case "variant", "object", "array":
		switch x := v.(type) {
		case string:
			s := strings.TrimSpace(x)
			if json.Valid([]byte(s)) {
				return s, nil
			}
			b, _ := json.Marshal(x)
			return string(b), nil
		case int64, float64:
			return textOf(x), nil
		case bool:
			return strconv.FormatBool(x), nil
		case []byte:
			b, _ := json.Marshal(hex.EncodeToString(x))
			return string(b), nil
		}
	}
	return v, nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

// TextOf renders a stored value as Snowflake renders it when cast to text;
// the result encoders use it for text cells so casts and results agree.
func TextOf(v any) string { return textOf(v) }

// FormatFloat renders a REAL value the way Snowflake's result cells carry it.
func FormatFloat(f float64) string { return formatFloat(f) }

// textOf renders a stored value as Snowflake renders it when cast to text.
func textOf(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return formatFloat(x)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return x.Format(layoutNTZ)
	}
	return fmt.Sprint(v)
}

// formatFloat renders a double the way Snowflake's JSON rowset does.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func formatTimeOfDay(d time.Duration) string {
	d %= 24 * time.Hour
	if d < 0 {
		d += 24 * time.Hour
	}
	return fmt.Sprintf("%02d:%02d:%02d.%09d", int(d/time.Hour), int(d/time.Minute)%60, int(d/time.Second)%60, int(d%time.Second))
}

func timeOf(v any, kind string) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string, []byte:
		t, _, err := parseTimestamp(str(x))
		if err != nil {
			return time.Time{}, timeError(kind, str(x))
		}
		return t, nil
	case int64:
		return epochToTime(x), nil
	case float64:
		sec, frac := math.Modf(x)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Time{}, timeError(kind, v)
}

// fromStorage converts a stored SQLite value of a column of type t into the
// Go value the RowIterator yields:
//
//	fixed: int64 (scale 0 and in range) or a decimal string with exactly
//	       Scale digits after the point
//	real: float64; text, variant, object, array: string; boolean: bool
//	date, timestamp_*: time.Time; time: time.Duration; binary: []byte
func fromStorage(v any, t sfType) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch t.Name {
	case "fixed":
		switch x := v.(type) {
		case int64:
			if t.Scale == 0 {
				return x, nil
			}
			return scaleDecimal(new(big.Float).SetInt64(x), t.Scale), nil
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return nil, numericError(x)
			}
			if t.Scale == 0 && math.Abs(x) < 9e18 {
				return int64(math.Round(x)), nil
			}
			return scaleDecimal(new(big.Float).SetFloat64(x), t.Scale), nil
		case bool:
			return fromStorage(b2i(x), t)
		case time.Time:
			return nil, numericError(x.Format(layoutNTZ))
		default:
			s := strings.TrimSpace(str(x))
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return fromStorage(n, t)
			}
			f, ok := new(big.Float).SetPrec(200).SetString(s)
			if !ok {
				return nil, numericError(s)
			}
			if t.Scale == 0 && f.IsInt() {
				if i, acc := f.Int64(); acc == big.Exact {
					return i, nil
				}
			}
			return scaleDecimal(f, t.Scale), nil
		}
	case "real":
		v2, err := toStorage(v, t)
		if err != nil {
			return nil, err
		}
		return v2, nil
	case "text", "variant", "object", "array":
		if tm, ok := v.(time.Time); ok {
			return tm.Format(layoutNTZ), nil
		}
		return textOf(v), nil
	case "boolean":
		b, err := toStorage(v, t)
		if err != nil {
			return nil, err
		}
		return b.(int64) != 0, nil
	case "date":
		tm, err := timeOf(v, "Date")
		if err != nil {
			return nil, err
		}
		return time.Date(tm.Year(), tm.Month(), tm.Day(), 0, 0, 0, 0, time.UTC), nil
	case "time":
		switch x := v.(type) {
		case time.Time:
			return time.Duration(x.Hour())*time.Hour + time.Duration(x.Minute())*time.Minute + time.Duration(x.Second())*time.Second + time.Duration(x.Nanosecond()), nil
		case int64:
			return time.Duration(x) * time.Second, nil
		}
		return parseTimeOfDay(str(v))
	case "timestamp_ntz":
		tm, err := timeOf(v, "Timestamp")
		if err != nil {
			return nil, err
		}
		// NTZ is wall-clock time: keep the clock reading, drop the zone.
		return time.Date(tm.Year(), tm.Month(), tm.Day(), tm.Hour(), tm.Minute(), tm.Second(), tm.Nanosecond(), time.UTC), nil
	case "timestamp_ltz", "timestamp_tz":
		return timeOf(v, "Timestamp")
	case "binary":
		switch x := v.(type) {
		case []byte:
			return x, nil
		case string:
			if b, err := hex.DecodeString(x); err == nil {
				return b, nil
			}
			return []byte(x), nil
		}
		return []byte(textOf(v)), nil
	}
	return v, nil
}

// scaleDecimal renders f with exactly scale fractional digits.
func scaleDecimal(f *big.Float, scale int64) string {
	if scale == 0 {
		i, _ := f.Int(nil)
		// Round half away from zero.
		r := new(big.Float).Sub(f, new(big.Float).SetInt(i))
		if r.Cmp(big.NewFloat(0.5)) >= 0 {
			i.Add(i, big.NewInt(1))
		} else if r.Cmp(big.NewFloat(-0.5)) <= 0 {
			i.Sub(i, big.NewInt(1))
		}
		return i.String()
	}
	return f.Text('f', int(scale))
}

// bindToStorage converts one driver bind value (always text on the wire)
// of the given Snowflake bind type into an SQLite argument.
func bindToStorage(typ string, v *string) (any, error) {
	if v == nil {
		return nil, nil
	}
	s := *v
	switch strings.ToUpper(typ) {
	case "FIXED":
		if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
			return n, nil
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, numericError(s)
		}
		return f, nil
	case "REAL":
		return toStorage(s, typeReal)
	case "BOOLEAN":
		return toStorage(s, typeBool)
	case "DATE":
		// gosnowflake sends milliseconds since the epoch; Node sends text.
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.UnixMilli(n).UTC().Format(layoutDate), nil
		}
		return toStorage(s, typeDate)
	case "TIME":
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return formatTimeOfDay(time.Duration(n)), nil
		}
		return toStorage(s, typeTime)
	case "TIMESTAMP_NTZ", "TIMESTAMP_LTZ", "TIMESTAMP_TZ", "TIMESTAMP":
		fields := strings.Fields(s)
		if len(fields) >= 1 {
			if n, ok := new(big.Int).SetString(fields[0], 10); ok {
				sec := new(big.Int).Div(n, big.NewInt(1e9))
				nsec := new(big.Int).Mod(n, big.NewInt(1e9))
				tm := time.Unix(sec.Int64(), nsec.Int64()).UTC()
				if len(fields) == 2 {
					if off, err := strconv.Atoi(fields[1]); err == nil {
						tm = tm.In(time.FixedZone("", (off-1440)*60))
					}
				}
				if strings.ToUpper(typ) == "TIMESTAMP_NTZ" || strings.ToUpper(typ) == "TIMESTAMP" {
					return tm.Format(layoutNTZ), nil
				}
				return tm.Format(layoutTZ), nil
			}
		}
		if strings.ToUpper(typ) == "TIMESTAMP_NTZ" {
			return toStorage(s, typeNTZ)
		}
		return toStorage(s, typeTZ)
	case "BINARY":
		return toStorage(s, typeBinary)
	case "VARIANT", "OBJECT", "ARRAY", "MAP":
		return toStorage(s, typeVariant)
	}
	return s, nil
}
