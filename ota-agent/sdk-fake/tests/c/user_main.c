/* A C firmware as an SDK project would have it, on the fake SDK: user_init() calls the
 * agent's ota_init() (or ota_init_with_key()), then the SDK's task runs until the agent
 * reboots the board. Prints the port, then the upgrade flag and the rules broken. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "ota_agent.h"

/* The fake board (tcpflash-sdk-fake). */
int tcpflash_fake_boot(const char *flash, uint32_t size_map, uint8_t running_bin);
uint16_t tcpflash_fake_port(uint16_t asked);
int tcpflash_fake_run(uint32_t max_ms);
uint32_t tcpflash_fake_violations(void);

static const char *key_hex;

static void user_init(void)
{
    if (key_hex == NULL) {
        ota_init();
        return;
    }
    unsigned char key[32];
    for (int i = 0; i < 32; i++) {
        unsigned int byte;
        sscanf(key_hex + 2 * i, "%2x", &byte);
        key[i] = (unsigned char)byte;
    }
    ota_init_with_key(key);
    memset(key, 0, sizeof key); /* the agent keeps its own copy */
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s FLASH SIZE_MAP [KEY_HEX]\n", argv[0]);
        return 2;
    }
    key_hex = argc > 3 ? argv[3] : NULL;
    tcpflash_fake_boot(argv[1], (uint32_t)atoi(argv[2]), 0);
    user_init();
    printf("port %u\n", tcpflash_fake_port(65056));
    fflush(stdout);
    int flag = tcpflash_fake_run(60000);
    printf("upgrade flag %d, rules broken %u\n", flag, tcpflash_fake_violations());
    return 0;
}
