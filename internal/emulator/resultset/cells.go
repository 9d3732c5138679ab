package resultset

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

// cellEncoder renders values as the strings of Snowflake's JSON rowset.
type cellEncoder struct {
	cols []sqlengine.Column
}

func newCellEncoder(cols []sqlengine.Column) *cellEncoder { return &cellEncoder{cols: cols} }

// cell renders value v of column i; ok is false for NULL.
func (e *cellEncoder) cell(i int, v any) (string, bool, error) {
	if v == nil {
		return "", false, nil
	}
	c := e.cols[i]
	switch c.Type {
	case "fixed":
		s, err := fixedString(v, c.Scale)
		return s, true, err
	case "real":
		f, err := toFloat(v)
		if err != nil {
			return "", false, err
		}
		return sqlengine.FormatFloat(f), true, nil
	case "boolean":
		b, err := toBool(v)
		if err != nil {
			return "", false, err
		}
		if b {
			return "1", true, nil
		}
		return "0", true, nil
	case "date":
		t, err := toTime(v)
		if err != nil {
			return "", false, err
		}
		return strconv.FormatInt(daysSinceEpoch(t), 10), true, nil
	case "time":
		d, err := toTimeOfDay(v)
		if err != nil {
			return "", false, err
		}
		sec := int64(d / time.Second)
		return epochString(sec, int64(d%time.Second), c.Scale), true, nil
	case "timestamp_ntz", "timestamp_ltz":
		t, err := toTime(v)
		if err != nil {
			return "", false, err
		}
		return epochString(floorSec(t), int64(t.Nanosecond()), c.Scale), true, nil
	case "timestamp_tz":
		t, err := toTime(v)
		if err != nil {
			return "", false, err
		}
		_, off := t.Zone()
		return epochString(floorSec(t), int64(t.Nanosecond()), c.Scale) + " " + strconv.Itoa(off/60+1440), true, nil
	case "binary":
		switch x := v.(type) {
		case []byte:
			return strings.ToUpper(hex.EncodeToString(x)), true, nil
		case string:
			return strings.ToUpper(hex.EncodeToString([]byte(x))), true, nil
		}
		return "", false, fmt.Errorf("resultset: binary column %s: unexpected %T", c.Name, v)
	}
	// text, variant, object, array and anything else: text.
	return sqlengine.TextOf(v), true, nil
}

func floorSec(t time.Time) int64 { return t.Unix() }

// epochString renders seconds and nanoseconds as "<sec>.<frac>" with scale
// fraction digits (no point when scale is 0).
func epochString(sec, nsec, scale int64) string {
	s := strconv.FormatInt(sec, 10)
	if scale <= 0 {
		return s
	}
	if scale > 9 {
		scale = 9
	}
	frac := fmt.Sprintf("%09d", nsec)
	return s + "." + frac[:scale]
}

func daysSinceEpoch(t time.Time) int64 {
	d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	secs := d.Unix()
	days := secs / 86400
	if secs%86400 != 0 && secs < 0 {
		days--
	}
	return days
}

// fixedString renders a fixed-point value with exactly scale fraction digits.
func fixedString(v any, scale int64) (string, error) {
	switch x := v.(type) {
	case int64:
		if scale == 0 {
			return strconv.FormatInt(x, 10), nil
		}
		return new(big.Float).SetInt64(x).Text('f', int(scale)), nil
	case int:
		return fixedString(int64(x), scale)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("resultset: fixed value %v out of range", x)
		}
		return strconv.FormatFloat(x, 'f', int(scale), 64), nil
	case string:
		return x, nil
	case *big.Int:
		return x.String(), nil
	case bool:
		if x {
			return "1", nil
		}
		return "0", nil
	}
	return "", fmt.Errorf("resultset: unexpected %T in a fixed column", v)
}

// unscaled returns the value times 10^scale as an integer (Arrow FIXED).
func unscaled(v any, scale int64) (int64, error) {
	switch x := v.(type) {
	case int64:
		if scale == 0 {
			return x, nil
		}
		r := new(big.Int).Mul(big.NewInt(x), new(big.Int).Exp(big.NewInt(10), big.NewInt(scale), nil))
		if !r.IsInt64() {
			return 0, fmt.Errorf("resultset: fixed value %d overflows int64 at scale %d", x, scale)
		}
		return r.Int64(), nil
	case int:
		return unscaled(int64(x), scale)
	case bool:
		if x {
			return unscaled(int64(1), scale)
		}
		return 0, nil
	case float64:
		f := math.Round(x * math.Pow10(int(scale)))
		if f > math.MaxInt64 || f < math.MinInt64 {
			return 0, fmt.Errorf("resultset: fixed value %v overflows int64", x)
		}
		return int64(f), nil
	case string:
		s := strings.TrimSpace(x)
		neg := strings.HasPrefix(s, "-")
		s = strings.TrimLeft(s, "+-")
		ip, fp := s, ""
		if i := strings.IndexByte(s, '.'); i >= 0 {
			ip, fp = s[:i], s[i+1:]
		}
		if int64(len(fp)) > scale {
			fp = fp[:scale]
		}
		fp += strings.Repeat("0", int(scale)-len(fp))
		digits := strings.TrimLeft(ip+fp, "0")
		if digits == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(digits, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("resultset: fixed value %q: %w", x, err)
		}
		if neg {
			n = -n
		}
		return n, nil
	}
	return 0, fmt.Errorf("resultset: unexpected %T in a fixed column", v)
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return 0, fmt.Errorf("resultset: real value %q: %w", x, err)
		}
		return f, nil
	}
	return 0, fmt.Errorf("resultset: unexpected %T in a real column", v)
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case int64:
		return x != 0, nil
	case int:
		return x != 0, nil
	case float64:
		return x != 0, nil
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		if err != nil {
			return false, fmt.Errorf("resultset: boolean value %q: %w", x, err)
		}
		return b, nil
	}
	return false, fmt.Errorf("resultset: unexpected %T in a boolean column", v)
}

func toTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x, nil
	case string:
		for _, l := range []string{"2006-01-02 15:04:05.999999999 -07:00", time.RFC3339Nano, "2006-01-02 15:04:05.999999999", "2006-01-02"} {
			if t, err := time.Parse(l, strings.TrimSpace(x)); err == nil {
				return t, nil
			}
		}
		return time.Time{}, fmt.Errorf("resultset: timestamp value %q not recognised", x)
	case int64:
		return time.Unix(x, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("resultset: unexpected %T in a date/timestamp column", v)
}

func toTimeOfDay(v any) (time.Duration, error) {
	switch x := v.(type) {
	case time.Duration:
		return x, nil
	case time.Time:
		return time.Duration(x.Hour())*time.Hour + time.Duration(x.Minute())*time.Minute + time.Duration(x.Second())*time.Second + time.Duration(x.Nanosecond()), nil
	case string:
		t, err := time.Parse("15:04:05.999999999", strings.TrimSpace(x))
		if err != nil {
			return 0, fmt.Errorf("resultset: time value %q: %w", x, err)
		}
		return toTimeOfDay(t)
	case int64:
		return time.Duration(x), nil
	}
	return 0, fmt.Errorf("resultset: unexpected %T in a time column", v)
}
