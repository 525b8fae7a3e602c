#include <rte_config.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ip.h>
#include <rte_mempool.h>
#include <rte_tcp.h>

#include "shim.h"

uint16_t hl_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, uint16_t nb_pkts) {
    return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t hl_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts) {
    return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *hl_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int hl_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count) {
    return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void hl_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

void *hl_rte_pktmbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

uint16_t hl_rte_pktmbuf_data_len(const struct rte_mbuf *m) { return rte_pktmbuf_data_len(m); }

uint32_t hl_rte_pktmbuf_pkt_len(const struct rte_mbuf *m) { return rte_pktmbuf_pkt_len(m); }

uint16_t hl_rte_pktmbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }

char *hl_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

uint16_t hl_rte_pktmbuf_tailroom(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }

int hl_rte_mbuf_rss_hash(const struct rte_mbuf *m, uint32_t *hash) {
    if (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) {
        *hash = m->hash.rss;
        return 1;
    }
    return 0;
}

void hl_rte_mbuf_tx_offload_ipv4_tcp(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len) {
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM | RTE_MBUF_F_TX_TCP_CKSUM;
    struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, l2_len);
    struct rte_tcp_hdr *tcp = rte_pktmbuf_mtod_offset(m, struct rte_tcp_hdr *, l2_len + l3_len);
    ip->hdr_checksum = 0;
    /* The offload contract: the application puts the pseudo-header checksum in the TCP field. */
    tcp->cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
}

void hl_rte_mbuf_tx_offload_ipv4(struct rte_mbuf *m, uint16_t l2_len, uint16_t l3_len) {
    m->l2_len = l2_len;
    m->l3_len = l3_len;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
    rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *, l2_len)->hdr_checksum = 0;
}

int hl_rte_eth_link_up(uint16_t port_id) {
    struct rte_eth_link link;
    int ret = rte_eth_link_get_nowait(port_id, &link);
    if (ret < 0)
        return ret;
    return link.link_status == RTE_ETH_LINK_UP;
}

unsigned int hl_rte_lcore_id(void) { return rte_lcore_id(); }

int hl_rte_errno(void) { return rte_errno; }

unsigned int hl_rte_mempool_in_use_count(const struct rte_mempool *mp) { return rte_mempool_in_use_count(mp); }

unsigned int hl_rte_mempool_avail_count(const struct rte_mempool *mp) { return rte_mempool_avail_count(mp); }

const uint64_t hl_RSS_IP_TCP = RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP;
const uint64_t hl_TX_OFFLOAD_IPV4_CKSUM = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM;
const uint64_t hl_TX_OFFLOAD_TCP_CKSUM = RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
const uint64_t hl_RX_OFFLOAD_IPV4_CKSUM = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
const uint64_t hl_RX_OFFLOAD_TCP_CKSUM = RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
