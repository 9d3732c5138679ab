package redirect

import (
	"fmt"
)

// reasonNames names the counters and refusal reasons by their index in the
// programs' enum sg_reason (bpf/snowgate.h). The names are stable: metrics and
// status output use them.
var reasonNames = map[snowgateSgReason]string{
	snowgateSgReasonSG_REDIRECTED4:         "redirected4",
	snowgateSgReasonSG_REDIRECTED6:         "redirected6",
	snowgateSgReasonSG_REFUSED_V6:          "refused_v6",
	snowgateSgReasonSG_REFUSED_QUIC:        "refused_quic",
	snowgateSgReasonSG_REFUSED_DOT:         "refused_dot",
	snowgateSgReasonSG_REFUSED_PROTO:       "refused_proto",
	snowgateSgReasonSG_REFUSED_RAW:         "refused_raw",
	snowgateSgReasonSG_DNS_REDIRECTED:      "dns_redirected",
	snowgateSgReasonSG_EGRESS_DROPPED:      "egress_dropped",
	snowgateSgReasonSG_TUPLE_UPDATE_FAILED: "tuple_update_failed",
	snowgateSgReasonSG_REFUSED_NO_TARGET:   "refused_no_target",
	snowgateSgReasonSG_REFUSED_NO_STORAGE:  "refused_no_storage",
	snowgateSgReasonSG_TUPLE_RECORDED:      "tuple_recorded",
	snowgateSgReasonSG_TUPLE_DELETED:       "tuple_deleted",
	snowgateSgReasonSG_DNS_REPLY_RESTORED:  "dns_reply_restored",
}

// CounterNames lists every counter name Counters reports, in reason order.
func CounterNames() []string {
	names := make([]string, 0, len(reasonNames))
	for i := snowgateSgReason(0); i < snowgateSgReasonSG_REASON_MAX; i++ {
		names = append(names, reasonName(i))
	}
	return names
}

func reasonName(r snowgateSgReason) string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return fmt.Sprintf("reason_%d", r)
}

// Counters returns every per-reason counter, summed over CPUs. The counters
// live in a pinned map, so they count across daemon restarts and upgrades.
func (r *Redirect) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, snowgateSgReasonSG_REASON_MAX)
	var perCPU []uint64
	for i := snowgateSgReason(0); i < snowgateSgReasonSG_REASON_MAX; i++ {
		if err := r.counters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", reasonName(i), err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[reasonName(i)] = sum
	}
	return out, nil
}
