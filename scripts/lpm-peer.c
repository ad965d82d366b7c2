/* DPDK's rte_lpm measured like its own lpm_perf_autotest, over a route list read from a file
 * (one "a.b.c.d/len" per line, as `lpm-perf --dump-routes` writes them), so that fastpath and
 * rte_lpm look up in the same table. dpdk-test's lpm_perf_autotest only runs its own ~1M-route
 * table; this is how scripts/bench-lpm.sh measures rte_lpm at other sizes.
 *
 *   lpm-peer ROUTES_FILE [ITERATIONS] -- EAL args
 *
 * Prints the lines dpdk-test prints: "Average LPM Lookup: X cycles (fails = Y%)" (one
 * rte_lpm_lookup per random address) and "BULK LPM Lookup: ..." (rte_lpm_lookup_bulk of 32),
 * over ITERATIONS (1024) batches of 4096 random addresses. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_cycles.h>
#include <rte_random.h>
#include <rte_lpm.h>

#define BATCH 4096
#define BULK 32

int main(int argc, char **argv)
{
	int n = rte_eal_init(argc, argv);
	if (n < 0) {
		fprintf(stderr, "lpm-peer: EAL init failed\n");
		return 2;
	}
	argc -= n;
	argv += n;
	if (argc < 2) {
		fprintf(stderr, "usage: lpm-peer EAL-ARGS -- ROUTES_FILE [ITERATIONS]\n");
		return 2;
	}
	unsigned iterations = argc > 2 ? (unsigned)atoi(argv[2]) : 1024;
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	struct rte_lpm_config cfg = { .max_rules = 2000000, .number_tbl8s = 2048, .flags = 0 };
	struct rte_lpm *lpm = rte_lpm_create("peer", SOCKET_ID_ANY, &cfg);
	if (!lpm) {
		fprintf(stderr, "lpm-peer: rte_lpm_create failed\n");
		return 1;
	}
	unsigned a, b, c, d, len, routes = 0, added = 0;
	uint64_t t = rte_rdtsc();
	while (fscanf(f, "%u.%u.%u.%u/%u", &a, &b, &c, &d, &len) == 5) {
		routes++;
		if (rte_lpm_add(lpm, (uint32_t)((a << 24) | (b << 16) | (c << 8) | d), (uint8_t)len, 0xaa) == 0)
			added++;
	}
	t = rte_rdtsc() - t;
	fclose(f);
	printf("No. routes = %u\nUnique added entries = %u\n", routes, added);
	printf("Average LPM Add: %.0f cycles\n", (double)t / (routes ? routes : 1));

	static uint32_t ips[BATCH];
	uint64_t total = 0, fails = 0;
	uint32_t hop;
	for (unsigned i = 0; i < iterations; i++) {
		for (unsigned j = 0; j < BATCH; j++)
			ips[j] = (uint32_t)rte_rand();
		uint64_t begin = rte_rdtsc();
		for (unsigned j = 0; j < BATCH; j++)
			if (rte_lpm_lookup(lpm, ips[j], &hop) != 0)
				fails++;
		total += rte_rdtsc() - begin;
	}
	double lookups = (double)iterations * BATCH;
	printf("Average LPM Lookup: %.1f cycles (fails = %.1f%%)\n", total / lookups, fails * 100.0 / lookups);
	total = 0;
	fails = 0;
	for (unsigned i = 0; i < iterations; i++) {
		uint32_t hops[BULK];
		for (unsigned j = 0; j < BATCH; j++)
			ips[j] = (uint32_t)rte_rand();
		uint64_t begin = rte_rdtsc();
		for (unsigned j = 0; j < BATCH; j += BULK) {
			rte_lpm_lookup_bulk(lpm, &ips[j], hops, BULK);
			for (unsigned k = 0; k < BULK; k++)
				if (!(hops[k] & RTE_LPM_LOOKUP_SUCCESS))
					fails++;
		}
		total += rte_rdtsc() - begin;
	}
	printf("BULK LPM Lookup: %.1f cycles (fails = %.1f%%)\n", total / lookups, fails * 100.0 / lookups);
	rte_lpm_free(lpm);
	rte_eal_cleanup();
	return 0;
}
