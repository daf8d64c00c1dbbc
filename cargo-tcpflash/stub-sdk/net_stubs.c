/* Stub of the SDK's espconn (liblwip in the SDK-shaped tree): the documented functions the
 * agent calls, with stand-in bodies. The SDK runs this library from flash. */
typedef signed char sint8;
typedef unsigned char uint8;
typedef unsigned short uint16;
typedef unsigned int uint32;

struct espconn { int type; int state; void *tcp; void *recv_callback; void *sent_callback; uint8 link_cnt; void *reverse; };
static struct espconn *last;

sint8 espconn_accept(struct espconn *c) { last = c; return 0; }
sint8 espconn_regist_connectcb(struct espconn *c, void *cb) { c->reverse = cb; return 0; }
sint8 espconn_regist_reconcb(struct espconn *c, void *cb) { c->reverse = cb; return 0; }
sint8 espconn_regist_disconcb(struct espconn *c, void *cb) { c->reverse = cb; return 0; }
sint8 espconn_regist_recvcb(struct espconn *c, void *cb) { c->recv_callback = cb; return 0; }
sint8 espconn_regist_sentcb(struct espconn *c, void *cb) { c->sent_callback = cb; return 0; }
sint8 espconn_regist_time(struct espconn *c, uint32 secs, uint8 flag) { return c == last ? (sint8)(secs + flag) * 0 : -12; }
sint8 espconn_tcp_set_max_con_allow(struct espconn *c, uint8 n) { return c == last ? 0 : (sint8)n; }
uint8 espconn_tcp_get_wnd(void) { return 4; }
sint8 espconn_send(struct espconn *c, uint8 *data, uint16 len) { return c && data && len ? 0 : -12; }
sint8 espconn_disconnect(struct espconn *c) { return c ? 0 : -12; }
sint8 espconn_abort(struct espconn *c) { return c ? 0 : -12; }
sint8 espconn_recv_hold(struct espconn *c) { return c ? 0 : -12; }
sint8 espconn_recv_unhold(struct espconn *c) { return c ? 0 : -12; }

/* The SDK's mDNS responder (espconn_mdns_init keeps the info's string pointers). */
static void *mdns_info;
void espconn_mdns_init(void *info) { mdns_info = info; }
