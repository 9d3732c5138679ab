package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/snowgate/snowgate/internal/recording"
)

// The synthetic connection of a pcap export: the agent is the client, the
// gateway's view of Snowflake the server, on port 80 so that Wireshark
// dissects the plaintext as HTTP without being told.
var (
	pcapClient     = net.IPv4(10, 0, 0, 1).To4()
	pcapServer     = net.IPv4(10, 0, 0, 2).To4()
	pcapClientMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	pcapServerMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	pcapClientPort = layers.TCPPort(40000)
	pcapServerPort = layers.TCPPort(80)
)

// pcapSegment bounds the payload of one synthetic TCP segment.
const pcapSegment = 16 << 10

// pcapConn writes one TCP connection's packets.
type pcapConn struct {
	w        *pcapgo.Writer
	cseq     uint32 // next client sequence number
	sseq     uint32
	lastTime time.Time
}

// writePcap writes the session's HTTP exchanges as one TCP connection.
func writePcap(out io.Writer, meta recording.Meta, recs []recording.Record) error {
	w := pcapgo.NewWriter(out)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	c := &pcapConn{w: w, cseq: 1000, sseq: 5000}
	host := "snowflake"
	if meta.Snowflake.Account != "" {
		host = meta.Snowflake.Account + ".snowflakecomputing.com"
	}
	start := meta.Started
	if len(recs) > 0 && !recs[0].Wall.IsZero() {
		start = recs[0].Wall
	}
	if err := c.handshake(start); err != nil {
		return err
	}
	var pending *recording.Record
	for i := range recs {
		r := &recs[i]
		switch r.Kind {
		case recording.KindLoginRequest, recording.KindQueryRequest, recording.KindRequest:
			pending = r
		case recording.KindLoginResponse, recording.KindQueryResponse, recording.KindRenew, recording.KindResponse, recording.KindError:
			req := pending
			pending = nil
			if req == nil {
				// A reply without its request (a poll): synthesise the GET.
				req = &recording.Record{Kind: recording.KindRequest, Method: orGet(r.Method), Path: r.Path, Wall: r.Wall}
			}
			if err := c.exchange(req.Wall, requestBytes(host, req), r.Wall, responseBytes(r)); err != nil {
				return err
			}
		case recording.KindChunk:
			req := &recording.Record{Method: http.MethodGet, Path: r.Path}
			if err := c.exchange(r.Wall.Add(-r.Duration), requestBytes(host, req), r.Wall, responseBytes(r)); err != nil {
				return err
			}
		}
	}
	return c.close()
}

func orGet(m string) string {
	if m == "" {
		return http.MethodGet
	}
	return m
}

// requestBytes is the plaintext HTTP request a record describes (as
// redacted as the record).
func requestBytes(host string, r *recording.Record) []byte {
	body := []byte(r.Body)
	if r.Kind == recording.KindQueryRequest {
		m := map[string]json.RawMessage{}
		_ = json.Unmarshal(r.Body, &m)
		sql, _ := json.Marshal(r.SQL)
		m["sqlText"] = sql
		if len(r.Bindings) > 0 {
			m["bindings"] = r.Bindings
		}
		body, _ = json.Marshal(m)
	}
	var b bytes.Buffer
	path := r.Path
	if path == "" {
		path = "/"
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", orGet(r.Method), path, host)
	for k, v := range r.Headers {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if len(body) > 0 || r.Method == http.MethodPost {
		fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// responseBytes is the plaintext HTTP response a record describes, the
// result put back where the protocol carries it.
func responseBytes(r *recording.Record) []byte {
	body := []byte(r.Body)
	ctype := "application/json"
	status := r.Status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case r.Kind == recording.KindChunk && r.Result != nil:
		if len(r.Result.Data) > 0 {
			body, ctype = r.Result.Data, "application/octet-stream"
		} else {
			var b bytes.Buffer
			for i, row := range r.Result.Rows {
				if i > 0 {
					b.WriteByte(',')
				}
				j, _ := json.Marshal(row)
				b.Write(j)
			}
			body = b.Bytes()
		}
	case r.Kind == recording.KindError:
		e := r.Error
		if e == nil {
			e = &recording.Error{}
		}
		body, _ = json.Marshal(map[string]any{"success": false, "code": e.Code, "message": e.Message, "data": nil})
	case r.Result != nil && (len(r.Result.Rows) > 0 || len(r.Result.Data) > 0):
		var env map[string]json.RawMessage
		if json.Unmarshal(r.Body, &env) == nil {
			var data map[string]json.RawMessage
			_ = json.Unmarshal(env["data"], &data)
			if data == nil {
				data = map[string]json.RawMessage{}
			}
			if len(r.Result.Rows) > 0 {
				data["rowset"], _ = json.Marshal(r.Result.Rows)
			}
			if len(r.Result.Data) > 0 {
				data["rowsetBase64"], _ = json.Marshal(base64.StdEncoding.EncodeToString(r.Result.Data))
			}
			env["data"], _ = json.Marshal(data)
			body, _ = json.Marshal(env)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n", status, http.StatusText(status), ctype, len(body))
	b.Write(body)
	return b.Bytes()
}

func (c *pcapConn) handshake(t time.Time) error {
	if err := c.packet(t, true, layers.TCP{SYN: true}, nil); err != nil {
		return err
	}
	c.cseq++
	if err := c.packet(t, false, layers.TCP{SYN: true, ACK: true}, nil); err != nil {
		return err
	}
	c.sseq++
	return c.packet(t, true, layers.TCP{ACK: true}, nil)
}

// exchange sends req from the client at t1 and resp from the server at t2.
func (c *pcapConn) exchange(t1 time.Time, req []byte, t2 time.Time, resp []byte) error {
	if err := c.send(t1, true, req); err != nil {
		return err
	}
	if t2.Before(t1) {
		t2 = t1
	}
	return c.send(t2, false, resp)
}

// send writes payload in segments, each acknowledged by the peer.
func (c *pcapConn) send(t time.Time, fromClient bool, payload []byte) error {
	for len(payload) > 0 {
		n := min(len(payload), pcapSegment)
		if err := c.packet(t, fromClient, layers.TCP{ACK: true, PSH: n == len(payload)}, payload[:n]); err != nil {
			return err
		}
		if fromClient {
			c.cseq += uint32(n)
		} else {
			c.sseq += uint32(n)
		}
		if err := c.packet(t, !fromClient, layers.TCP{ACK: true}, nil); err != nil {
			return err
		}
		payload = payload[n:]
	}
	return nil
}

func (c *pcapConn) close() error {
	t := c.lastTime
	if err := c.packet(t, true, layers.TCP{FIN: true, ACK: true}, nil); err != nil {
		return err
	}
	c.cseq++
	if err := c.packet(t, false, layers.TCP{FIN: true, ACK: true}, nil); err != nil {
		return err
	}
	c.sseq++
	return c.packet(t, true, layers.TCP{ACK: true}, nil)
}

// packet writes one Ethernet/IPv4/TCP packet with the connection's
// sequence and acknowledgement numbers.
func (c *pcapConn) packet(t time.Time, fromClient bool, tcp layers.TCP, payload []byte) error {
	if t.Before(c.lastTime) {
		t = c.lastTime
	}
	c.lastTime = t
	eth := layers.Ethernet{SrcMAC: pcapServerMAC, DstMAC: pcapClientMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: pcapServer, DstIP: pcapClient, Flags: layers.IPv4DontFragment}
	tcp.SrcPort, tcp.DstPort = pcapServerPort, pcapClientPort
	tcp.Seq, tcp.Ack = c.sseq, c.cseq
	if fromClient {
		eth.SrcMAC, eth.DstMAC = pcapClientMAC, pcapServerMAC
		ip.SrcIP, ip.DstIP = pcapClient, pcapServer
		tcp.SrcPort, tcp.DstPort = pcapClientPort, pcapServerPort
		tcp.Seq, tcp.Ack = c.cseq, c.sseq
	}
	if !tcp.ACK {
		tcp.Ack = 0
	}
	tcp.Window = 65535
	if err := tcp.SetNetworkLayerForChecksum(&ip); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&eth, &ip, &tcp, gopacket.Payload(payload))
	if err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	data := buf.Bytes()
	ci := gopacket.CaptureInfo{Timestamp: t, CaptureLength: len(data), Length: len(data)}
	if err := c.w.WritePacket(ci, data); err != nil {
		return fmt.Errorf("pcap: %w", err)
	}
	return nil
}
