/* empty: keeps a module library buildable while its directory has no sources. */
typedef int mh_empty_unit_;
