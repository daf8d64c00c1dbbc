/* Stub of the SDK's libdriver: the entry point (call_user_start1 lives here from 3.0 on). */
extern void stub_start(void);

void call_user_start1(void)
{
    stub_start();
}
