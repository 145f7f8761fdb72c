//! A site with its own directories and a real `<site>.fpm` container (filled in next).
