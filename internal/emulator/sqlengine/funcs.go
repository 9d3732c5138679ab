package sqlengine

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

// The SQLite functions below implement the Snowflake functions SQLite lacks.
// The translator rewrites Snowflake calls into calls of these (all prefixed
// sg_ so they cannot clash with user functions).

var registerOnce sync.Once
var registerErr error

// running maps the id of an executing statement to its context, so that a
// long function (SYSTEM$WAIT) can observe cancellation.
var (
	running    sync.Map // int64 -> context.Context
	nextExecID atomic.Int64
)

func registerFunctions() error {
	registerOnce.Do(func() {
		reg := func(name string, n int32, det bool, fn func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error)) {
			if registerErr != nil {
				return
			}
			if det {
				registerErr = sqlite.RegisterDeterministicScalarFunction(name, n, fn)
			} else {
				registerErr = sqlite.RegisterScalarFunction(name, n, fn)
			}
		}
		reg("sg_cast", -1, true, fnCast(false))
		reg("sg_try_cast", -1, true, fnCast(true))
		reg("sg_div", 1, true, fnDiv)
		reg("sg_uniform", 3, true, fnUniform)
		reg("sg_randstr", 2, true, fnRandstr)
		reg("sg_random", 1, true, fnRandomSeed)
		reg("sg_wait", -1, false, fnWait)
		reg("sg_dateadd", 3, true, fnDateAdd)
		reg("sg_datediff", 3, true, fnDateDiff)
		reg("sg_date_trunc", 2, true, fnDateTrunc)
		reg("sg_date_part", 2, true, fnDatePart)
		reg("sg_contains", 2, true, fnContains)
		reg("sg_startswith", 2, true, fnStartsWith)
		reg("sg_endswith", 2, true, fnEndsWith)
		reg("sg_split_part", 3, true, fnSplitPart)
		reg("sg_lpad", -1, true, pad(true))
		reg("sg_rpad", -1, true, pad(false))
		reg("sg_left", 2, true, side(true))
		reg("sg_right", 2, true, side(false))
		reg("sg_hash", -1, true, fnHash)
		reg("sg_decode", -1, true, fnDecode)
		reg("sg_trunc", -1, true, fnTrunc)
		reg("sg_square", 1, true, fnSquare)
		reg("sg_equal_null", 2, true, fnEqualNull)
		reg("sg_nvl2", 3, true, fnNvl2)
		reg("sg_div0", 2, true, fnDiv0)
		reg("sg_regexp_like", 2, true, fnRegexpLike)
		reg("sg_regexp_replace", -1, true, fnRegexpReplace)
		reg("sg_regexp_substr", -1, true, fnRegexpSubstr)
		reg("sg_name_part", 2, true, fnNamePart)
		reg("sg_data_type", 1, true, fnDataType)
		agg := func(name string, mk func() sqlite.AggregateFunction) {
			if registerErr != nil {
				return
			}
			registerErr = sqlite.RegisterFunction(name, &sqlite.FunctionImpl{NArgs: 1, Deterministic: true,
				MakeAggregate: func(sqlite.FunctionContext) (sqlite.AggregateFunction, error) { return mk(), nil }})
		}
		agg("sg_median", func() sqlite.AggregateFunction { return &medianAgg{} })
		agg("sg_stddev", func() sqlite.AggregateFunction { return &stddevAgg{} })
		agg("sg_variance", func() sqlite.AggregateFunction { return &stddevAgg{isVariance: true} })
		if registerErr != nil {
			registerErr = fmt.Errorf("register sqlite functions: %w", registerErr)
		}
	})
	return registerErr
}

// fnCast implements CAST/::/TO_* : sg_cast(value, [ignored…,] 'TYPE').
func fnCast(try bool) func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
	return func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		if len(args) < 2 {
			return nil, fmt.Errorf("sg: cast needs a value and a type")
		}
		name, _ := args[len(args)-1].(string)
		t, ok := typeFromDecl(name)
		if !ok {
			return nil, fmt.Errorf("sg: unknown type %q", name)
		}
		v, err := toStorage(args[0], t)
		if err != nil {
			if try {
				return nil, nil
			}
			return nil, err
		}
		return v, nil
	}
}

// fnDiv guards a divisor: Snowflake fails on division by zero where SQLite
// yields NULL, and divides integers exactly where SQLite truncates.
func fnDiv(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case int64:
		if x == 0 {
			return nil, errDivZero
		}
		return float64(x), nil
	case float64:
		if x == 0 {
			return nil, errDivZero
		}
		return x, nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		if err != nil {
			return nil, numericError(x)
		}
		if f == 0 {
			return nil, errDivZero
		}
		return f, nil
	}
	return args[0], nil
}

// mix64 is the splitmix64 finaliser: a cheap, well-spread hash of a seed.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// seedOf turns a generator argument into 64 bits of seed.
func seedOf(v driver.Value) uint64 {
	switch x := v.(type) {
	case int64:
		return uint64(x)
	case float64:
		return math.Float64bits(x)
	case string:
		h := fnv.New64a()
		h.Write([]byte(x))
		return h.Sum64()
	case []byte:
		h := fnv.New64a()
		h.Write(x)
		return h.Sum64()
	case bool:
		if x {
			return 1
		}
	}
	return 0
}

func numArg(v driver.Value) (float64, bool, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true, true
	case float64:
		return x, false, true
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return float64(n), true, true
		}
		if f, err := strconv.ParseFloat(x, 64); err == nil {
			return f, false, true
		}
	}
	return 0, false, false
}

// fnUniform implements UNIFORM(lo, hi, gen): a value in [lo, hi], integer
// when both bounds are integers, determined entirely by gen.
func fnUniform(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil || args[2] == nil {
		return nil, nil
	}
	lo, loInt, ok1 := numArg(args[0])
	hi, hiInt, ok2 := numArg(args[1])
	if !ok1 || !ok2 {
		return nil, &valueError{code: "090120", state: "22023", msg: "argument 1 and 2 to function UNIFORM needs to be constant, found non-numeric values"}
	}
	h := mix64(seedOf(args[2]))
	if loInt && hiInt {
		l, u := int64(lo), int64(hi)
		if u < l {
			l, u = u, l
		}
		span := uint64(u-l) + 1
		if span == 0 { // full int64 range
			return int64(h), nil
		}
		return l + int64(h%span), nil
	}
	frac := float64(h>>11) / float64(1<<53)
	return lo + frac*(hi-lo), nil
}

const randstrAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// fnRandstr implements RANDSTR(len, gen): a string of len letters and
// digits, the same for the same gen.
func fnRandstr(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	n, _, ok := numArg(args[0])
	if !ok || n < 0 {
		return nil, &valueError{code: "100096", state: "22023", msg: "RANDSTR length must be a non-negative number"}
	}
	if n > maxTextLength {
		n = maxTextLength
	}
	b := make([]byte, int(n))
	state := seedOf(args[1])
	for i := range b {
		state = mix64(state)
		b[i] = randstrAlphabet[state%uint64(len(randstrAlphabet))]
	}
	return string(b), nil
}

// fnRandomSeed implements RANDOM(seed): a 64-bit value fixed by the seed.
func fnRandomSeed(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], mix64(seedOf(args[0])^0x5eed))
	return int64(binary.LittleEndian.Uint64(buf[:])), nil
}

// fnWait implements SYSTEM$WAIT(n [, unit]) as sg_wait(execID, n [, unit]).
// It sleeps, returning early with an error when the statement's context is
// cancelled.
func fnWait(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if len(args) < 2 {
		return nil, &valueError{code: "001044", state: "42P13", msg: "SQL compilation error:\nInvalid argument types for function 'SYSTEM$WAIT'"}
	}
	id, _ := args[0].(int64)
	n, _, ok := numArg(args[1])
	if !ok || n < 0 {
		return nil, &valueError{code: "100069", state: "22023", msg: "SYSTEM$WAIT: invalid amount"}
	}
	unit := "SECONDS"
	if len(args) > 2 {
		if s, ok := args[2].(string); ok {
			unit = strings.ToUpper(strings.TrimSpace(s))
		}
	}
	var d time.Duration
	switch unit {
	case "SECONDS", "SECOND", "S":
		d = time.Duration(n * float64(time.Second))
	case "MILLISECONDS", "MILLISECOND", "MS":
		d = time.Duration(n * float64(time.Millisecond))
	case "MINUTES", "MINUTE", "M":
		d = time.Duration(n * float64(time.Minute))
	case "HOURS", "HOUR", "H":
		d = time.Duration(n * float64(time.Hour))
	default:
		return nil, &valueError{code: "100069", state: "22023", msg: fmt.Sprintf("SYSTEM$WAIT: invalid time unit '%s'", unit)}
	}
	ctx := context.Background()
	if c, ok := running.Load(id); ok {
		ctx = c.(context.Context)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, &valueError{code: codeCancelled, state: "57014", msg: "SQL execution canceled"}
	}
	amount := strconv.FormatFloat(n, 'f', -1, 64)
	return "waited " + amount + " " + strings.ToLower(unit), nil
}

func datePart(v driver.Value) string {
	s, _ := v.(string)
	s = strings.ToUpper(strings.Trim(strings.TrimSpace(s), `'"`))
	switch s {
	case "YEAR", "YEARS", "Y", "YY", "YYYY", "YR", "YRS":
		return "year"
	case "MONTH", "MONTHS", "MM", "MON", "MONS":
		return "month"
	case "DAY", "DAYS", "D", "DD":
		return "day"
	case "WEEK", "WEEKS", "W", "WK":
		return "week"
	case "HOUR", "HOURS", "H", "HH", "HR", "HRS":
		return "hour"
	case "MINUTE", "MINUTES", "MI", "MIN", "MINS":
		return "minute"
	case "SECOND", "SECONDS", "S", "SEC", "SECS":
		return "second"
	case "MILLISECOND", "MILLISECONDS", "MS", "MSEC":
		return "ms"
	case "MICROSECOND", "MICROSECONDS", "US", "USEC":
		return "us"
	case "NANOSECOND", "NANOSECONDS", "NS", "NSEC":
		return "ns"
	}
	return ""
}

// fnDateAdd implements DATEADD(part, n, value) on stored temporal text.
func fnDateAdd(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[1] == nil || args[2] == nil {
		return nil, nil
	}
	part := datePart(args[0])
	nf, _, ok := numArg(args[1])
	if !ok || part == "" {
		return nil, &valueError{code: "001065", state: "22023", msg: fmt.Sprintf("invalid date part '%v'", args[0])}
	}
	n := int(nf)
	s := textOf(args[2])
	tm, hasZone, err := parseTimestamp(s)
	if err != nil {
		return nil, err
	}
	switch part {
	case "year":
		tm = tm.AddDate(n, 0, 0)
	case "month":
		tm = tm.AddDate(0, n, 0)
	case "day":
		tm = tm.AddDate(0, 0, n)
	case "week":
		tm = tm.AddDate(0, 0, 7*n)
	case "hour":
		tm = tm.Add(time.Duration(n) * time.Hour)
	case "minute":
		tm = tm.Add(time.Duration(n) * time.Minute)
	case "second":
		tm = tm.Add(time.Duration(n) * time.Second)
	case "ms":
		tm = tm.Add(time.Duration(n) * time.Millisecond)
	case "us":
		tm = tm.Add(time.Duration(n) * time.Microsecond)
	case "ns":
		tm = tm.Add(time.Duration(n))
	}
	switch {
	case hasZone:
		return tm.Format(layoutTZ), nil
	case len(strings.TrimSpace(s)) == len(layoutDate) && (part == "year" || part == "month" || part == "day" || part == "week"):
		return tm.Format(layoutDate), nil
	}
	return tm.Format(layoutNTZ), nil
}

// fnDateDiff implements DATEDIFF(part, a, b): boundaries crossed from a to b.
func fnDateDiff(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[1] == nil || args[2] == nil {
		return nil, nil
	}
	part := datePart(args[0])
	a, _, err := parseTimestamp(textOf(args[1]))
	if err != nil {
		return nil, err
	}
	b, _, err := parseTimestamp(textOf(args[2]))
	if err != nil {
		return nil, err
	}
	trunc := func(t time.Time, d time.Duration) int64 { return t.UnixNano() / int64(d) }
	switch part {
	case "year":
		return int64(b.Year() - a.Year()), nil
	case "month":
		return int64((b.Year()-a.Year())*12 + int(b.Month()) - int(a.Month())), nil
	case "day":
		da := time.Date(a.Year(), a.Month(), a.Day(), 0, 0, 0, 0, time.UTC)
		db := time.Date(b.Year(), b.Month(), b.Day(), 0, 0, 0, 0, time.UTC)
		return int64(db.Sub(da) / (24 * time.Hour)), nil
	case "week":
		return int64(b.Sub(a) / (7 * 24 * time.Hour)), nil
	case "hour":
		return trunc(b, time.Hour) - trunc(a, time.Hour), nil
	case "minute":
		return trunc(b, time.Minute) - trunc(a, time.Minute), nil
	case "second":
		return trunc(b, time.Second) - trunc(a, time.Second), nil
	case "ms":
		return trunc(b, time.Millisecond) - trunc(a, time.Millisecond), nil
	case "us":
		return trunc(b, time.Microsecond) - trunc(a, time.Microsecond), nil
	case "ns":
		return b.UnixNano() - a.UnixNano(), nil
	}
	return nil, &valueError{code: "001065", state: "22023", msg: fmt.Sprintf("invalid date part '%v'", args[0])}
}

// truncTime truncates t to the start of the named part.
func truncTime(t time.Time, part string) (time.Time, bool) {
	switch part {
	case "year":
		return time.Date(t.Year(), 1, 1, 0, 0, 0, 0, t.Location()), true
	case "quarter":
		m := (int(t.Month())-1)/3*3 + 1
		return time.Date(t.Year(), time.Month(m), 1, 0, 0, 0, 0, t.Location()), true
	case "month":
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, t.Location()), true
	case "week":
		d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
		wd := (int(d.Weekday()) + 6) % 7 // Monday first
		return d.AddDate(0, 0, -wd), true
	case "day":
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location()), true
	case "hour":
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), 0, 0, 0, t.Location()), true
	case "minute":
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, t.Location()), true
	case "second":
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, t.Location()), true
	}
	return t, false
}

// fnDateTrunc implements DATE_TRUNC(part, value), keeping the value's form.
func fnDateTrunc(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[1] == nil {
		return nil, nil
	}
	part := datePart(args[0])
	if p := strings.ToUpper(strings.Trim(textOf(args[0]), `'" `)); p == "QUARTER" || p == "Q" || p == "QTR" {
		part = "quarter"
	}
	s := textOf(args[1])
	tm, hasZone, err := parseTimestamp(s)
	if err != nil {
		return nil, err
	}
	tm, ok := truncTime(tm, part)
	if !ok {
		return nil, &valueError{code: "001065", state: "22023", msg: fmt.Sprintf("invalid date part '%v'", args[0])}
	}
	switch {
	case hasZone:
		return tm.Format(layoutTZ), nil
	case len(strings.TrimSpace(s)) == len(layoutDate):
		return tm.Format(layoutDate), nil
	}
	return tm.Format(layoutNTZ), nil
}

// fnDatePart implements DATE_PART(part, value) and YEAR(value) & co.
func fnDatePart(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[1] == nil {
		return nil, nil
	}
	p := strings.ToUpper(strings.Trim(textOf(args[0]), `'" `))
	tm, _, err := parseTimestamp(textOf(args[1]))
	if err != nil {
		return nil, err
	}
	switch p {
	case "QUARTER", "Q", "QTR":
		return int64((int(tm.Month())-1)/3 + 1), nil
	case "DAYOFWEEK", "DOW", "WEEKDAY":
		return int64(tm.Weekday()), nil
	case "DAYOFYEAR", "DOY":
		return int64(tm.YearDay()), nil
	case "WEEK", "WEEKOFYEAR", "WK":
		_, w := tm.ISOWeek()
		return int64(w), nil
	case "EPOCH_SECOND", "EPOCH":
		return tm.Unix(), nil
	case "EPOCH_MILLISECOND":
		return tm.UnixMilli(), nil
	}
	switch datePart(args[0]) {
	case "year":
		return int64(tm.Year()), nil
	case "month":
		return int64(tm.Month()), nil
	case "day":
		return int64(tm.Day()), nil
	case "hour":
		return int64(tm.Hour()), nil
	case "minute":
		return int64(tm.Minute()), nil
	case "second":
		return int64(tm.Second()), nil
	case "ns":
		return int64(tm.Nanosecond()), nil
	}
	return nil, &valueError{code: "001065", state: "22023", msg: fmt.Sprintf("invalid date part '%v'", args[0])}
}

func fnContains(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	return b2i(strings.Contains(textOf(args[0]), textOf(args[1]))), nil
}

func fnStartsWith(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	return b2i(strings.HasPrefix(textOf(args[0]), textOf(args[1]))), nil
}

func fnEndsWith(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	return b2i(strings.HasSuffix(textOf(args[0]), textOf(args[1]))), nil
}

// fnSplitPart implements SPLIT_PART(s, delim, n) with 1-based n (negative
// counts from the end).
func fnSplitPart(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil || args[2] == nil {
		return nil, nil
	}
	s, d := textOf(args[0]), textOf(args[1])
	nf, _, ok := numArg(args[2])
	if !ok {
		return nil, numericError(args[2])
	}
	var parts []string
	if d == "" {
		parts = []string{s}
	} else {
		parts = strings.Split(s, d)
	}
	n := int(nf)
	if n == 0 {
		n = 1
	}
	if n < 0 {
		n = len(parts) + n + 1
	}
	if n < 1 || n > len(parts) {
		return "", nil
	}
	return parts[n-1], nil
}

func pad(left bool) func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
	return func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		if args[0] == nil || args[1] == nil {
			return nil, nil
		}
		s := []rune(textOf(args[0]))
		nf, _, ok := numArg(args[1])
		if !ok || nf < 0 {
			return nil, numericError(args[1])
		}
		n := int(nf)
		if n > maxTextLength {
			n = maxTextLength
		}
		fill := []rune(" ")
		if len(args) > 2 && args[2] != nil {
			fill = []rune(textOf(args[2]))
		}
		if len(s) >= n {
			return string(s[:n]), nil
		}
		if len(fill) == 0 {
			return string(s), nil
		}
		p := make([]rune, 0, n-len(s))
		for len(p) < n-len(s) {
			p = append(p, fill[len(p)%len(fill)])
		}
		if left {
			return string(p) + string(s), nil
		}
		return string(s) + string(p), nil
	}
}

func side(left bool) func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
	return func(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
		if args[0] == nil || args[1] == nil {
			return nil, nil
		}
		s := []rune(textOf(args[0]))
		nf, _, ok := numArg(args[1])
		if !ok {
			return nil, numericError(args[1])
		}
		n := int(nf)
		if n < 0 {
			n = 0
		}
		if n > len(s) {
			n = len(s)
		}
		if left {
			return string(s[:n]), nil
		}
		return string(s[len(s)-n:]), nil
	}
}

// fnHash implements HASH(...): a signed 64-bit hash of the arguments.
func fnHash(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	h := fnv.New64a()
	for _, a := range args {
		h.Write([]byte(textOf(a)))
		h.Write([]byte{0})
	}
	return int64(mix64(h.Sum64())), nil
}

// fnDecode implements DECODE(expr, search1, result1, …, [default]) with
// NULL matching NULL, as Snowflake does.
func fnDecode(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if len(args) < 3 {
		return nil, &valueError{code: "001044", state: "42P13", msg: "SQL compilation error:\nInvalid argument count for function 'DECODE'"}
	}
	x := args[0]
	i := 1
	for ; i+1 < len(args); i += 2 {
		if sameValue(x, args[i]) {
			return args[i+1], nil
		}
	}
	if i < len(args) {
		return args[i], nil
	}
	return nil, nil
}

func sameValue(a, b driver.Value) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	fa, _, okA := numArg(a)
	fb, _, okB := numArg(b)
	if okA && okB {
		return fa == fb
	}
	return textOf(a) == textOf(b)
}

var regexCache sync.Map // pattern -> *regexp.Regexp

func compileRegex(p string) (*regexp.Regexp, error) {
	if r, ok := regexCache.Load(p); ok {
		return r.(*regexp.Regexp), nil
	}
	r, err := regexp.Compile(p)
	if err != nil {
		return nil, &valueError{code: "100048", state: "2201B", msg: fmt.Sprintf("Invalid regular expression: '%s'", p)}
	}
	regexCache.Store(p, r)
	return r, nil
}

// fnRegexpLike implements REGEXP_LIKE(s, pattern): the whole string matches.
func fnRegexpLike(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	r, err := compileRegex("^(?:" + textOf(args[1]) + ")$")
	if err != nil {
		return nil, err
	}
	return b2i(r.MatchString(textOf(args[0]))), nil
}

// fnRegexpReplace implements REGEXP_REPLACE(s, pattern [, replacement]).
func fnRegexpReplace(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if len(args) < 2 || args[0] == nil || args[1] == nil {
		return nil, nil
	}
	r, err := compileRegex(textOf(args[1]))
	if err != nil {
		return nil, err
	}
	repl := ""
	if len(args) > 2 && args[2] != nil {
		repl = strings.NewReplacer(`\1`, "${1}", `\2`, "${2}", `\3`, "${3}", `$`, "$$").Replace(textOf(args[2]))
	}
	return r.ReplaceAllString(textOf(args[0]), repl), nil
}

// fnRegexpSubstr implements REGEXP_SUBSTR(s, pattern): the first match.
func fnRegexpSubstr(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if len(args) < 2 || args[0] == nil || args[1] == nil {
		return nil, nil
	}
	r, err := compileRegex(textOf(args[1]))
	if err != nil {
		return nil, err
	}
	m := r.FindStringIndex(textOf(args[0]))
	if m == nil {
		return nil, nil
	}
	return textOf(args[0])[m[0]:m[1]], nil
}

// nameParts splits an SQLite table name "DB.SCHEMA.NAME" for the
// INFORMATION_SCHEMA views: sg_name_part(name, 0|1|2).
func fnNamePart(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	parts := strings.SplitN(textOf(args[0]), ".", 3)
	i, _, _ := numArg(args[1])
	if len(parts) != 3 || int(i) < 0 || int(i) > 2 {
		return nil, nil
	}
	return parts[int(i)], nil
}

// fnDataType maps a declared column type to INFORMATION_SCHEMA's DATA_TYPE.
func fnDataType(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	t, ok := typeFromDecl(textOf(args[0]))
	if !ok {
		return "TEXT", nil
	}
	switch t.Name {
	case "fixed":
		return "NUMBER", nil
	case "real":
		return "FLOAT", nil
	case "text":
		return "TEXT", nil
	}
	return strings.ToUpper(t.Name), nil
}

// medianAgg implements MEDIAN: it keeps the group's numbers.
type medianAgg struct{ vals []float64 }

func (m *medianAgg) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	if f, _, ok := numArg(args[0]); ok && args[0] != nil {
		m.vals = append(m.vals, f)
	}
	return nil
}
func (m *medianAgg) WindowInverse(*sqlite.FunctionContext, []driver.Value) error {
	return fmt.Errorf("sg: MEDIAN is not supported as a sliding window")
}
func (m *medianAgg) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if len(m.vals) == 0 {
		return nil, nil
	}
	v := append([]float64(nil), m.vals...)
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2], nil
	}
	return (v[n/2-1] + v[n/2]) / 2, nil
}
func (m *medianAgg) Final(*sqlite.FunctionContext) {}

// stddevAgg implements STDDEV/STDDEV_SAMP and VARIANCE (sample).
type stddevAgg struct {
	n          float64
	mean, m2   float64
	isVariance bool
}

func (s *stddevAgg) Step(_ *sqlite.FunctionContext, args []driver.Value) error {
	f, _, ok := numArg(args[0])
	if !ok || args[0] == nil {
		return nil
	}
	s.n++
	d := f - s.mean
	s.mean += d / s.n
	s.m2 += d * (f - s.mean)
	return nil
}
func (s *stddevAgg) WindowInverse(*sqlite.FunctionContext, []driver.Value) error {
	return fmt.Errorf("sg: STDDEV is not supported as a sliding window")
}
func (s *stddevAgg) WindowValue(*sqlite.FunctionContext) (driver.Value, error) {
	if s.n < 2 {
		return nil, nil
	}
	v := s.m2 / (s.n - 1)
	if s.isVariance {
		return v, nil
	}
	return math.Sqrt(v), nil
}
func (s *stddevAgg) Final(*sqlite.FunctionContext) {}

// fnTrunc implements TRUNC/TRUNCATE(x [, scale]) on numbers.
func fnTrunc(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if len(args) == 0 || args[0] == nil {
		return nil, nil
	}
	scale := 0.0
	if len(args) > 1 {
		scale, _, _ = numArg(args[1])
	}
	switch x := args[0].(type) {
	case int64:
		if scale >= 0 {
			return x, nil
		}
	}
	f, _, ok := numArg(args[0])
	if !ok {
		return nil, numericError(args[0])
	}
	p := math.Pow10(int(scale))
	r := math.Trunc(f*p) / p
	if scale <= 0 {
		return int64(r), nil
	}
	return r, nil
}

func fnSquare(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	switch x := args[0].(type) {
	case nil:
		return nil, nil
	case int64:
		return x * x, nil
	}
	f, _, ok := numArg(args[0])
	if !ok {
		return nil, numericError(args[0])
	}
	return f * f, nil
}

// fnEqualNull implements EQUAL_NULL(a, b): equality where NULL equals NULL.
func fnEqualNull(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	return b2i(sameValue(args[0], args[1])), nil
}

// fnNvl2 implements NVL2(x, ifNotNull, ifNull).
func fnNvl2(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] != nil {
		return args[1], nil
	}
	return args[2], nil
}

// fnDiv0 implements DIV0(a, b): a / b, or 0 when b is 0.
func fnDiv0(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	if args[0] == nil || args[1] == nil {
		return nil, nil
	}
	a, _, ok1 := numArg(args[0])
	b, _, ok2 := numArg(args[1])
	if !ok1 || !ok2 {
		return nil, numericError(args[1])
	}
	if b == 0 {
		return int64(0), nil
	}
	return a / b, nil
}
