/*
 * Real symbols for DPDK's `static inline` fast-path functions and for the mbuf fields Rust needs,
 * so that no struct layout or field offset is written down on the Rust side: these are compiled
 * against the installed headers, whatever the DPDK release.
 */
#ifndef HIOLOAD_SHIM_H
#define HIOLOAD_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

uint16_t hl_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t hl_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *hl_rte_pktmbuf_alloc(struct rte_mempool *mp);
int hl_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void hl_rte_pktmbuf_free(struct rte_mbuf *m);
/* Start of the packet data (rte_pktmbuf_mtod). */
void *hl_rte_pktmbuf_data(struct rte_mbuf *m);
/* Bytes of packet data in this (first) segment. */
uint16_t hl_rte_pktmbuf_data_len(const struct rte_mbuf *m);
/* Total packet length over all segments. */
uint32_t hl_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);
/* Segments in the packet. */
uint16_t hl_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);
/* Grow the data by len bytes at the end; NULL if there is no room. */
char *hl_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
/* Room left after the data in the first segment. */
uint16_t hl_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
/* The NIC's RSS hash, if it set one (returns 1 and fills *hash), else 0. */
int hl_rte_mbuf_rss_hash(const struct rte_mbuf *m, uint32_t *hash);
/* Request IPv4 header and TCP checksum offload (fills the TCP pseudo-header checksum). */
void hl_rte_mbuf_tx_offload_ipv4_tcp(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len);
/* Request IPv4 header checksum offload only (other protocols carry their own checksums). */
void hl_rte_mbuf_tx_offload_ipv4(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len);
/* 1 if the port's link is up, 0 if down, negative on error (rte_eth_link's layout differs
 * between releases; this keeps it out of the Rust side). */
int hl_rte_eth_link_up(uint16_t port_id);
unsigned int hl_rte_lcore_id(void);
int hl_rte_errno(void);
/* Mempool counters. */
unsigned int hl_rte_mempool_in_use_count(const struct rte_mempool *mp);
unsigned int hl_rte_mempool_avail_count(const struct rte_mempool *mp);

/* Flag values DPDK defines with RTE_BIT64(), which bindgen cannot evaluate. */
extern const uint64_t hl_RSS_IP_TCP;          /* RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP */
extern const uint64_t hl_TX_OFFLOAD_IPV4_CKSUM;
extern const uint64_t hl_TX_OFFLOAD_TCP_CKSUM;
extern const uint64_t hl_RX_OFFLOAD_IPV4_CKSUM;
extern const uint64_t hl_RX_OFFLOAD_TCP_CKSUM;

#endif
