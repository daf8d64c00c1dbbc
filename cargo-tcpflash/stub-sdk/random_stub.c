/* Stub of the SDK's WPA library (libwpa), where os_get_random lives. */
int os_get_random(unsigned char *buf, unsigned int len)
{
    for (unsigned int i = 0; i < len; i++) {
        buf[i] = (unsigned char)(i * 151u + 7u);
    }
    return 0;
}
