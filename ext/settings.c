#include <string.h>

#include "settings.h"

/* A default one byte too long would still compile, without its NUL. */
#define MP_SETTING_NO_CHECK(type, name, def, doc)
#define MP_SETTING_STR_CHECK(name, size, def, doc) \
    _Static_assert(sizeof(def) <= (size), "default of " #name " does not fit");
MP_SETTINGS(MP_SETTING_NO_CHECK, MP_SETTING_STR_CHECK)

static const mp_settings defaults = {
#define MP_SETTING_VAL_DEFAULT(type, name, def, doc) .name = (def),
#define MP_SETTING_STR_DEFAULT(name, size, def, doc) .name = def,
    MP_SETTINGS(MP_SETTING_VAL_DEFAULT, MP_SETTING_STR_DEFAULT)
};

void mp_settings_init(mp_settings *s)
{
    *s = defaults;
}

/* The kind follows from the declared type, so a line in MP_SETTINGS names
 * its type once; a type not listed here fails to compile rather than being
 * stored wrongly. */
#define MP_SETTING_KIND(type) _Generic((type)0, \
    bool: MP_SETTING_BOOL, \
    signed char: MP_SETTING_INT, short: MP_SETTING_INT, int: MP_SETTING_INT, \
    long: MP_SETTING_INT, long long: MP_SETTING_INT, \
    unsigned char: MP_SETTING_UINT, unsigned short: MP_SETTING_UINT, \
    unsigned int: MP_SETTING_UINT, unsigned long: MP_SETTING_UINT, \
    unsigned long long: MP_SETTING_UINT, \
    float: MP_SETTING_FLOAT, double: MP_SETTING_FLOAT)

#define MP_SETTING_SIZE(name) sizeof(((mp_settings *)0)->name)

const mp_setting_desc mp_setting_descs[] = {
#define MP_SETTING_VAL_DESC(type, name, def, doc) \
    { #name, MP_SETTING_KIND(type), offsetof(mp_settings, name), MP_SETTING_SIZE(name), doc },
#define MP_SETTING_STR_DESC(name, size, def, doc) \
    { #name, MP_SETTING_STR, offsetof(mp_settings, name), MP_SETTING_SIZE(name), doc },
    MP_SETTINGS(MP_SETTING_VAL_DESC, MP_SETTING_STR_DESC)
};

const int mp_setting_count = sizeof(mp_setting_descs) / sizeof(mp_setting_descs[0]);
